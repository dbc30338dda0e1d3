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
      -- post_deletions is ordered by the delete's arrival, so this reads the last minutes' deletes
      -- only: looking this feed's posts up in the posts mirror cost half of the whole lookup.
      AND post_id NOT IN (
          SELECT post_id FROM post_deletions
          WHERE deleted_at >= fromUnixTimestamp64Milli(toInt64({version:UInt64}), 'UTC')
      )
)
GROUP BY user_id
