-- How much of the last {days} days' activity the taste model {v} can score: active users (who
-- engaged) and active authors (engaged with) that have a vector.
WITH
    active AS (
        SELECT groupUniqArray(user_id) AS users, groupUniqArray(author_id) AS authors
        FROM events
        WHERE event_time >= now64(3) - toIntervalDay({days:UInt32}) AND action != 'view'
    ),
    known AS (
        SELECT groupUniqArrayIf(id, kind = 'user') AS users, groupUniqArrayIf(id, kind = 'author') AS authors
        FROM taste_vectors
        WHERE version = {v:UInt64}
    )
SELECT length(active.users), length(arrayIntersect(active.users, known.users)),
       length(active.authors), length(arrayIntersect(active.authors, known.authors))
FROM active CROSS JOIN known
