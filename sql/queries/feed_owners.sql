-- The users with a personal feed in {version} (feed_recommendations is ordered by user): what the
-- read path asks ClickHouse about. An id not among them (a new or unknown user) is shown trending
-- without a lookup that would find nothing (see nova_assets/core/cache/owners.py).
SELECT DISTINCT user_id FROM feed_recommendations WHERE version = {version:UInt64}
