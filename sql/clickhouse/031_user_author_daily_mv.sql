-- object: user_author_daily_mv
-- kind: materialized_view
-- depends: events, user_author_daily
CREATE MATERIALIZED VIEW IF NOT EXISTS {{ db }}.user_author_daily_mv {{ on_cluster }}
TO {{ db }}.{{ table("user_author_daily") }}
AS SELECT
    user_id,
    author_id,
    toDate(event_time) AS day,
    countIf(action = 'view') AS views,
    countIf(action = 'click') AS clicks,
    countIf(action = 'like') AS likes,
    countIf(action = 'comment') AS comments,
    countIf(action = 'share') AS shares,
    sum(dwell_ms) AS dwell_ms,
    max(event_time) AS last_interaction
FROM {{ db }}.{{ table("events") }}
GROUP BY user_id, author_id, day;
