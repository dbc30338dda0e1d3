-- object: post_deletions_mv
-- kind: materialized_view
-- depends: posts, post_deletions
-- Feeds post_deletions from every block CDC inserts into the posts mirror (no POPULATE: it races
-- inserts; the deletes before it existed are older than any feed version being served).
CREATE MATERIALIZED VIEW IF NOT EXISTS {{ db }}.post_deletions_mv {{ on_cluster }}
TO {{ db }}.{{ table("post_deletions") }}
AS SELECT id AS post_id, ingested_at AS deleted_at
FROM {{ db }}.{{ table("posts") }}
WHERE is_deleted = 1;
