-- Offline evaluation of one set of top-k lists against what users did after the split time.
-- {lists} is a table of (user_id, rank, post_id, author_id) per strategy; truth = non-view
-- interactions in [split, split + horizon). With {restrict}, only the users in {users} are judged.
-- Returns one row per strategy.
WITH
    truth AS (
        SELECT user_id, groupUniqArray(post_id) AS posts
        FROM events
        WHERE event_time >= {split:DateTime64(3, 'UTC')}
          AND event_time < {split:DateTime64(3, 'UTC')} + toIntervalHour({horizon_hours:UInt32})
          AND action != 'view'
        GROUP BY user_id
    ),
    lists AS (
        SELECT strategy, user_id, groupArray((post_id, author_id)) AS recs
        FROM (SELECT * FROM eval_lists WHERE rank <= {k:UInt16} AND (NOT {restrict:Bool} OR user_id IN {users:Array(UUID)})
              ORDER BY strategy, user_id, rank)
        GROUP BY strategy, user_id
    ),
    judged AS (
        SELECT
            l.strategy,
            l.user_id,
            arrayMap(x -> x.1, l.recs) AS rec_posts,
            length(arrayIntersect(rec_posts, t.posts)) AS hits,
            length(t.posts) AS relevant,
            arraySum(arrayMap((p, i) -> has(t.posts, p) / log2(i + 1), rec_posts, arrayEnumerate(rec_posts)))
                / arraySum(arrayMap(i -> 1 / log2(i + 1), range(1, least(relevant, {k:UInt16}) + 1))) AS ndcg,
            length(arrayDistinct(arrayMap(x -> x.2, l.recs))) / greatest(length(l.recs), 1) AS author_diversity
        FROM lists AS l
        INNER JOIN truth AS t ON t.user_id = l.user_id
    )
SELECT
    strategy,
    count() AS users_evaluated,
    avg(hits > 0) AS hit_rate_at_k,
    avg(hits / relevant) AS recall_at_k,
    avg(ndcg) AS ndcg_at_k,
    length(groupUniqArrayArray(rec_posts)) AS distinct_posts_recommended,
    avg(author_diversity) AS author_diversity
FROM judged
GROUP BY strategy
ORDER BY strategy
