-- The feeds of the users in `wanted` (a CTE the caller puts in front: an array parameter for the
-- read path, the most active users for warming) as JSON arrays of posts in rank order, encoded
-- by ClickHouse itself so neither warming nor the read path does per-post work. Users without a
-- feed in {version} are absent. Posts deleted since {version} was computed are left out (ranks
-- keep their numbers).
-- concat (strings through toJSONString) instead of toJSONString of a tuple array: byte-identical
-- output at ~60% of the cost. Rank order comes from arraySort, not from an ORDER BY in a
-- subquery, which parallel aggregation does not promise to keep.
SELECT
    user_id,
    concat('[', arrayStringConcat(arrayMap(p -> p.2, arraySort(groupArray((rank, post)))), ','), ']') AS posts
FROM
(
    SELECT
        user_id,
        rank,
        concat(
            '{"rank":', toString(rank),
            ',"post_id":"', toString(post_id),
            '","author_id":"', toString(author_id),
            '","score":', toJSONString(round(score, 6)),
            ',"reason":', toJSONString(reason), '}'
        ) AS post
    FROM feed_recommendations
    WHERE version = {version:UInt64} AND user_id IN wanted
      -- a post deleted after this version was computed is not served (the recompute left out the
      -- ones deleted before it); the version number is its start time in epoch milliseconds.
      -- Only these feeds' posts are looked up, by the mirror's primary key: a scan of every
      -- deleted post cost a cold read ~4 ms of server CPU at 100k posts, and grew with them.
      AND post_id NOT IN (
          SELECT id FROM posts
          WHERE id IN (
                SELECT post_id FROM feed_recommendations WHERE version = {version:UInt64} AND user_id IN wanted
            )
            AND is_deleted = 1 AND ingested_at >= fromUnixTimestamp64Milli(toInt64({version:UInt64}), 'UTC')
      )
)
GROUP BY user_id
