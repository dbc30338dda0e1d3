-- object: post_deletions_mv
-- Right after the view exists: the deletes of the last day that arrived before it, since a feed
-- version computed before the upgrade may still be served and must leave them out. A delete both
-- here and from the view is one row twice (the read path's filter is NOT IN).
INSERT INTO {{ db }}.post_deletions (post_id, deleted_at)
SELECT id, ingested_at FROM {{ db }}.posts
WHERE is_deleted = 1 AND ingested_at >= now64(3) - INTERVAL 1 DAY;
