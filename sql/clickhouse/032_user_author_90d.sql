-- object: user_author_90d
-- kind: view
-- depends: user_author_daily
-- What readers query for affinity: totals over the last 90 days (today included). The filter on
-- day makes expired days disappear at once, before TTL removes them physically.
CREATE VIEW IF NOT EXISTS {{ db }}.user_author_90d {{ on_cluster }}
AS SELECT
    user_id,
    author_id,
    sum(views) AS total_views,
    sum(clicks) AS total_clicks,
    sum(likes) AS total_likes,
    sum(comments) AS total_comments,
    sum(shares) AS total_shares,
    sum(dwell_ms) AS total_dwell_ms,
    max(last_interaction) AS last_interaction
FROM {{ db }}.user_author_daily
WHERE day > today() - 90
GROUP BY user_id, author_id;
