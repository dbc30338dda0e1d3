-- What the taste model learns from: weighted user -> author interactions of the {days} days
-- before {as_of}. Whole days come from user_author_daily; the day of {as_of} itself from the
-- events before it, so a model trained for a past split never sees what followed the split.
SELECT user_id, author_id, sum(weight) AS weight
FROM
(
    SELECT user_id, author_id,
           sum(views * {view_weight:Float64} + clicks + likes * 3 + comments * 5 + shares * 8) AS weight
    FROM user_author_daily
    WHERE day > toDate({as_of:DateTime('UTC')}) - {days:UInt32} AND day < toDate({as_of:DateTime('UTC')})
    GROUP BY user_id, author_id
    UNION ALL
    SELECT user_id, author_id,
           sum(multiIf(action = 'view', {view_weight:Float64}, action = 'click', 1, action = 'like', 3,
                       action = 'comment', 5, 8)) AS weight
    FROM events
    WHERE event_time >= toStartOfDay({as_of:DateTime('UTC')}) AND event_time < {as_of:DateTime('UTC')}
    GROUP BY user_id, author_id
)
WHERE user_id != author_id
GROUP BY user_id, author_id
HAVING weight > 0
