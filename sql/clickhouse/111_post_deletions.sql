-- object: post_deletions
-- kind: table
-- depends: posts
-- The posts CDC has deleted, by when the delete arrived, so the read path can leave out posts deleted
-- after a feed version was computed with a read of the last minutes only. Looking the feed's posts up
-- in the posts mirror instead cost half of every feed lookup (~3 ms of a ~7.5 ms miss at 20k users,
-- 100 posts each). A replayed delete only repeats a row (the filter is NOT IN). Rows expire after a
-- week: a served version is minutes old.
CREATE TABLE IF NOT EXISTS {{ db }}.{{ table("post_deletions") }} {{ on_cluster }}
(
    post_id    UUID,
    deleted_at DateTime64(3, 'UTC')
)
ENGINE = {{ engine("MergeTree") }}
ORDER BY (deleted_at)
TTL toDateTime(deleted_at) + INTERVAL 7 DAY
SETTINGS index_granularity = 1024;

{{ distributed("post_deletions", "cityHash64(post_id)") }}
