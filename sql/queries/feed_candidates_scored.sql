-- Ranked feed rows for every covered user, as of {as_of}, from the aggregates only.
-- Used by the feed_recommendations asset (INSERT ... SELECT into a new version) and by the
-- offline evaluation (as of a past time). All values are bound parameters.
--
-- score = (hotness + engagement_weight * engagement_rate) * (1 + affinity) * (1 + follow_boost if followed)
--   engagement_rate = decayed (w_click*clicks + w_like*likes + w_comment*comments + w_share*shares)
--                     / (decayed views + view_prior)      -- views are the denominator, never a plus
--   hotness         = (decayed weighted interactions + 1) / (age_hours + 2) ^ gravity   (Hacker News)
--   affinity        = log1p(90-day user→author weighted interactions + dwell minutes) / affinity_scale
-- Candidates: the top {hot_posts} global posts plus every recent post by an author the user follows.
-- Excluded: the user's own posts and deleted posts. At most {per_author} posts per author and
-- {feed_size} posts per user. Users with no affinity and no follows get the global trending list
-- (stored under the nil user id).
WITH
    deleted AS (
        SELECT id FROM posts GROUP BY id HAVING argMax(is_deleted, version) = 1
    ),
    post_features AS (
        SELECT
            post_id,
            any(author_id) AS author_id,
            min(window_start) AS first_seen,
            sum(w * (clicks * {w_click:Float64} + likes * {w_like:Float64}
                     + comments * {w_comment:Float64} + shares * {w_share:Float64})) AS interactions,
            sum(w * views) AS views_decayed,
            dateDiff('second', min(window_start), {as_of:DateTime('UTC')}) / 3600.0 AS age_hours
        FROM
        (
            SELECT *, pow(0.5, dateDiff('second', window_start, {as_of:DateTime('UTC')}) / 3600.0 / {half_life_hours:Float64}) AS w
            FROM post_metrics_1h
            WHERE window_start >= {as_of:DateTime('UTC')} - toIntervalHour({window_hours:UInt32})
              AND window_start < {as_of:DateTime('UTC')}
        )
        GROUP BY post_id
        HAVING post_id NOT IN (SELECT id FROM deleted)
    ),
    scored_posts AS (
        SELECT
            post_id,
            author_id,
            (interactions + 1) / pow(age_hours + 2, {gravity:Float64})
                + {engagement_weight:Float64} * interactions / (views_decayed + {view_prior:Float64}) AS base
        FROM post_features
    ),
    hot AS (
        SELECT post_id, author_id, base FROM scored_posts ORDER BY base DESC LIMIT {hot_posts:UInt32}
    ),
    affinity AS (
        SELECT
            user_id,
            author_id,
            log1p(sum(clicks * {w_click:Float64} + likes * {w_like:Float64} + comments * {w_comment:Float64}
                      + shares * {w_share:Float64}) + sum(dwell_ms) / 60000.0) / {affinity_scale:Float64} AS affinity
        FROM user_author_daily
        WHERE day > toDate({as_of:DateTime('UTC')}) - 90 AND day <= toDate({as_of:DateTime('UTC')})
        GROUP BY user_id, author_id
    ),
    follows_now AS (
        SELECT follower_id AS user_id, followee_id AS author_id
        FROM follows FINAL
        WHERE created_at <= {as_of:DateTime('UTC')}
    ),
    covered AS (
        SELECT DISTINCT user_id FROM (SELECT user_id FROM affinity UNION ALL SELECT user_id FROM follows_now)
    ),
    candidates AS (
        SELECT c.user_id, h.post_id, h.author_id, h.base, 'hot' AS reason
        FROM covered AS c CROSS JOIN hot AS h
        UNION ALL
        SELECT f.user_id, s.post_id, s.author_id, s.base, 'followed' AS reason
        FROM follows_now AS f INNER JOIN scored_posts AS s ON s.author_id = f.author_id
    ),
    personal AS (
        SELECT
            c.user_id AS user_id,
            c.post_id AS post_id,
            c.author_id AS author_id,
            max(c.base * (1 + coalesce(a.affinity, 0)) * if(c.reason = 'followed', 1 + {follow_boost:Float64}, 1)) AS score,
            if(countIf(c.reason = 'followed') > 0, 'followed', if(max(coalesce(a.affinity, 0)) > 0, 'affinity', 'hot')) AS reason
        FROM candidates AS c
        LEFT JOIN affinity AS a ON a.user_id = c.user_id AND a.author_id = c.author_id
        WHERE c.author_id != c.user_id
        GROUP BY c.user_id, c.post_id, c.author_id
    ),
    diverse AS (
        SELECT * FROM (SELECT * FROM personal ORDER BY user_id, score DESC, post_id LIMIT {per_author:UInt32} BY user_id, author_id)
        ORDER BY user_id, score DESC, post_id
        LIMIT {feed_size:UInt32} BY user_id
    ),
    trending AS (
        SELECT toUUID('00000000-0000-0000-0000-000000000000') AS user_id, post_id, author_id, base AS score, 'trending' AS reason
        FROM (SELECT * FROM hot ORDER BY base DESC, post_id LIMIT {per_author:UInt32} BY author_id)
        ORDER BY base DESC, post_id
        LIMIT {feed_size:UInt32}
    )
SELECT
    user_id,
    toUInt16(row_number() OVER (PARTITION BY user_id ORDER BY score DESC, post_id)) AS rank,
    post_id,
    author_id,
    score,
    reason
FROM (SELECT user_id, post_id, author_id, score, reason FROM diverse UNION ALL SELECT * FROM trending)
