-- object: post_metrics_1h_mv
-- kind: materialized_view
-- depends: events, post_metrics_1h
-- Feeds post_metrics_1h from every block inserted into events (no POPULATE: it races inserts).
CREATE MATERIALIZED VIEW IF NOT EXISTS {{ db }}.post_metrics_1h_mv {{ on_cluster }}
TO {{ db }}.{{ table("post_metrics_1h") }}
AS SELECT
    post_id,
    toStartOfHour(event_time) AS window_start,
    any(author_id) AS author_id,
    countIf(action = 'view') AS views,
    countIf(action = 'click') AS clicks,
    countIf(action = 'like') AS likes,
    countIf(action = 'comment') AS comments,
    countIf(action = 'share') AS shares,
    sum(dwell_ms) AS dwell_ms
FROM {{ db }}.{{ table("events") }}
GROUP BY post_id, window_start;
