-- Ranked feed rows for every covered user, as of {as_of}, from the aggregates and the recent events.
-- Used by the feed_recommendations asset (INSERT ... SELECT into a new version) and by the
-- offline evaluation (as of a past time). All values are bound parameters.
--
-- score = base * (1 + affinity) * (1 + follow_boost if followed) * (1 + co_weight * co_support)
--   base            = hotness + engagement_weight * engagement_rate
--   engagement_rate = decayed (w_click*clicks + w_like*likes + w_comment*comments + w_share*shares)
--                     / (decayed views + view_prior)      -- views are the denominator, never a plus
--   hotness         = (decayed weighted interactions + 1) / (age_hours + 2) ^ gravity   (Hacker News)
--   affinity        = log1p(90-day user→author weighted interactions + dwell minutes) / affinity_scale
--   co_support      = sum of the post's cosine similarity (shared engaged users) to each of the
--                     user's recent engagements (item-to-item co-engagement, below)
-- Candidates, each tagged with the signal that brought it (reason):
--   followed   every post of the window by an author the user follows, including posts nobody has
--              engaged with yet (from the posts mirror, scored with the author's average engagement
--              at the post's age: a follower sees a new post at once)
--   co_engaged posts co-engaged with the user's last {co_recent} engagements in {co_window_hours} h:
--              users who engaged with X also engaged with Y; at most {co_fanout} Y per X, pairs seen
--              by at least {co_min_support} users
--   hot        the top {hot_posts} global posts ("affinity" when the user likes the author)
-- Excluded: the user's own posts and deleted posts. At most {per_author} posts per author and
-- {feed_size} posts per user. Users with no affinity and no follows get the global trending list
-- (stored under the nil user id).
WITH
    -- the users this query scores: one shard of {sample} by hash ({shard}; sample 1: everyone),
    -- and only {only_users} when that is not empty (the offline evaluation's judged users)
    scope AS (
        SELECT arrayJoin({only_users:Array(UUID)}) AS user_id
    ),
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
    author_prior AS (
        -- what a new post of an author can expect: the author's average engagement in the window
        SELECT author_id, avg(interactions) AS prior_interactions,
               avg(interactions / (views_decayed + {view_prior:Float64})) AS prior_rate
        FROM post_features
        GROUP BY author_id
    ),
    fresh_posts AS (
        -- published in the window, not deleted, no engagement yet: scored with its author's prior at its own age
        SELECT f.post_id AS post_id, f.author_id AS author_id,
               (coalesce(p.prior_interactions, 0) + 1) / pow(f.age_hours + 2, {gravity:Float64})
                   + {engagement_weight:Float64} * coalesce(p.prior_rate, 0) AS base
        FROM
        (
            -- the latest version of each row decides (a delete's own timestamps must not hide it)
            SELECT id AS post_id, argMax(author_id, version) AS author_id, argMax(created_at, version) AS created,
                   dateDiff('second', created, {as_of:DateTime('UTC')}) / 3600.0 AS age_hours
            FROM posts
            GROUP BY id
            HAVING argMax(is_deleted, version) = 0
               AND created >= {as_of:DateTime('UTC')} - toIntervalHour({window_hours:UInt32})
               AND created < {as_of:DateTime('UTC')}
               AND post_id NOT IN (SELECT post_id FROM post_features)
        ) AS f
        LEFT JOIN author_prior AS p ON p.author_id = f.author_id
    ),
    author_best AS (
        -- a followed author's best {per_author} posts: only they can make a feed (at most {per_author} per author)
        SELECT post_id, author_id, base
        FROM (SELECT post_id, author_id, base FROM scored_posts UNION ALL SELECT * FROM fresh_posts)
        ORDER BY author_id, base DESC, post_id
        LIMIT {per_author:UInt32} BY author_id
    ),
    author_recent AS (
        -- an author's newest {follow_recent} posts, rank 0 the newest: what a follower sees first
        SELECT * FROM
        (
            SELECT r.post_id AS post_id, r.author_id AS author_id, coalesce(b.base, 0) AS base,
                   row_number() OVER (PARTITION BY r.author_id ORDER BY r.created DESC, r.post_id) - 1 AS rrank
            FROM
            (
                SELECT id AS post_id, argMax(author_id, version) AS author_id, argMax(created_at, version) AS created
                FROM posts
                GROUP BY id
                HAVING argMax(is_deleted, version) = 0
                   AND created >= {as_of:DateTime('UTC')} - toIntervalHour({window_hours:UInt32})
                   AND created < {as_of:DateTime('UTC')}
            ) AS r
            LEFT JOIN (SELECT post_id, base FROM scored_posts UNION ALL SELECT post_id, base FROM fresh_posts) AS b
                ON b.post_id = r.post_id
        )
        WHERE rrank < {follow_recent:UInt32}
    ),
    recent_engagement AS (
        SELECT user_id, post_id
        FROM events
        WHERE event_time >= {as_of:DateTime('UTC')} - toIntervalHour({co_window_hours:UInt32})
          AND event_time < {as_of:DateTime('UTC')}
          AND action != 'view'
        GROUP BY user_id, post_id
        ORDER BY user_id, max(event_time) DESC, post_id
        LIMIT {co_recent:UInt32} BY user_id
    ),
    engaged_users AS (
        SELECT post_id, count() AS n FROM recent_engagement GROUP BY post_id
    ),
    co_pairs AS (
        -- cosine of the two posts' engaged users: a pair counts for what the posts share beyond
        -- their popularity (a hot post is co-engaged with everything)
        SELECT pr.x AS x, pr.y AS y, pr.together / sqrt(nx.n * ny.n) AS strength
        FROM
        (
            SELECT a.post_id AS x, b.post_id AS y, count() AS together
            FROM recent_engagement AS a
            INNER JOIN recent_engagement AS b ON a.user_id = b.user_id
            WHERE a.post_id != b.post_id
            GROUP BY x, y
            HAVING together >= {co_min_support:UInt32}
        ) AS pr
        INNER JOIN engaged_users AS nx ON nx.post_id = pr.x
        INNER JOIN engaged_users AS ny ON ny.post_id = pr.y
        ORDER BY x, strength DESC, y
        LIMIT {co_fanout:UInt32} BY x
    ),
    co_engaged AS (
        SELECT r.user_id AS user_id, c.y AS post_id, sum(c.strength) AS support
        FROM recent_engagement AS r
        INNER JOIN co_pairs AS c ON c.x = r.post_id
        WHERE cityHash64(r.user_id) % {sample:UInt32} = {shard:UInt32} AND (empty({only_users:Array(UUID)}) OR r.user_id IN scope)
        GROUP BY user_id, post_id
    ),
    affinity AS (
        -- whole days from user_author_daily, the day of {as_of} from the events before it
        SELECT
            user_id,
            author_id,
            log1p(sum(weighted) + sum(dwell) / 60000.0) / {affinity_scale:Float64} AS affinity
        FROM
        (
            SELECT user_id, author_id,
                   sum(clicks * {w_click:Float64} + likes * {w_like:Float64} + comments * {w_comment:Float64}
                       + shares * {w_share:Float64}) AS weighted, sum(dwell_ms) AS dwell
            FROM user_author_daily
            WHERE day > toDate({as_of:DateTime('UTC')}) - 90 AND day < toDate({as_of:DateTime('UTC')})
              AND cityHash64(user_id) % {sample:UInt32} = {shard:UInt32} AND (empty({only_users:Array(UUID)}) OR user_id IN scope)
            GROUP BY user_id, author_id
            UNION ALL
            SELECT user_id, author_id,
                   sum(multiIf(action = 'click', {w_click:Float64}, action = 'like', {w_like:Float64},
                               action = 'comment', {w_comment:Float64}, action = 'share', {w_share:Float64}, 0)),
                   sum(dwell_ms)
            FROM events
            WHERE event_time >= toStartOfDay({as_of:DateTime('UTC')}) AND event_time < {as_of:DateTime('UTC')}
              AND cityHash64(user_id) % {sample:UInt32} = {shard:UInt32} AND (empty({only_users:Array(UUID)}) OR user_id IN scope)
            GROUP BY user_id, author_id
        )
        GROUP BY user_id, author_id
    ),
    user_taste AS (
        SELECT id AS user_id, v FROM taste_vectors WHERE version = {taste_version:UInt64} AND kind = 'user'
    ),
    author_taste AS (
        SELECT id AS author_id, v FROM taste_vectors WHERE version = {taste_version:UInt64} AND kind = 'author'
    ),
    post_audience AS (
        -- a post's audience in taste space: the taste vectors of who engaged with it lately, each
        -- weighted by what they did and how long ago; its dot product with a user's vector is how
        -- much people of that user's taste engage with the post now (works for a post of any age)
        SELECT e.post_id AS post_id, sumForEach(arrayMap(x -> x * e.w, ut.v)) AS audience
        FROM
        (
            SELECT user_id, post_id,
                   sum(multiIf(action = 'view', 0.25, action = 'click', {w_click:Float64}, action = 'like', {w_like:Float64},
                               action = 'comment', {w_comment:Float64}, {w_share:Float64})
                       * pow(0.5, dateDiff('second', event_time, {as_of:DateTime('UTC')}) / 3600.0 / {half_life_hours:Float64})) AS w
            FROM events
            WHERE event_time >= {as_of:DateTime('UTC')} - toIntervalHour({co_window_hours:UInt32})
              AND event_time < {as_of:DateTime('UTC')}
            GROUP BY user_id, post_id
        ) AS e
        INNER JOIN user_taste AS ut ON ut.user_id = e.user_id
        GROUP BY e.post_id
    ),
    taste_authors AS (
        SELECT user_id, author_id FROM taste_candidates
        WHERE version = {taste_version:UInt64} AND cityHash64(user_id) % {sample:UInt32} = {shard:UInt32} AND (empty({only_users:Array(UUID)}) OR user_id IN scope)
    ),
    follows_now AS (
        SELECT follower_id AS user_id, followee_id AS author_id
        FROM follows FINAL
        WHERE created_at <= {as_of:DateTime('UTC')} AND cityHash64(follower_id) % {sample:UInt32} = {shard:UInt32} AND (empty({only_users:Array(UUID)}) OR follower_id IN scope)
    ),
    covered AS (
        SELECT DISTINCT user_id
        FROM (SELECT user_id FROM affinity UNION ALL SELECT user_id FROM follows_now UNION ALL SELECT user_id FROM user_taste)
        WHERE cityHash64(user_id) % {sample:UInt32} = {shard:UInt32} AND (empty({only_users:Array(UUID)}) OR user_id IN scope)
    ),
    candidates AS (
        SELECT c.user_id, h.post_id, h.author_id, h.base, 'hot' AS reason, 0 AS support, 1000 AS rrank
        FROM covered AS c CROSS JOIN hot AS h
        UNION ALL
        -- a followed author's newest posts (rrank 0 = the newest: what a follower sees first) and best ones
        SELECT f.user_id, s.post_id, s.author_id, s.base, 'followed' AS reason, 0 AS support, s.rrank AS rrank
        FROM follows_now AS f
        INNER JOIN author_recent AS s ON s.author_id = f.author_id
        UNION ALL
        SELECT f.user_id, s.post_id, s.author_id, s.base, 'followed' AS reason, 0 AS support,
               {follow_recent:UInt32} AS rrank
        FROM follows_now AS f
        INNER JOIN author_best AS s ON s.author_id = f.author_id
        UNION ALL
        SELECT e.user_id, s.post_id, s.author_id, s.base, 'co_engaged' AS reason, e.support, 1000 AS rrank
        FROM co_engaged AS e INNER JOIN scored_posts AS s ON s.post_id = e.post_id
        UNION ALL
        SELECT t.user_id, s.post_id, s.author_id, s.base, 'taste' AS reason, 0 AS support, 1000 AS rrank
        FROM taste_authors AS t
        INNER JOIN author_best AS s ON s.author_id = t.author_id
    ),
    candidate_keys AS (
        -- one row per (user, post): the signals that brought it, before any vector is joined (the
        -- vectors then travel with one row per post, not with every reason's duplicate)
        SELECT
            user_id,
            post_id,
            author_id,
            max(base) AS base,
            max(support) AS support,
            countIf(reason = 'followed') > 0 AS followed,
            countIf(reason = 'co_engaged') > 0 AS co_engaged,
            countIf(reason = 'taste') > 0 AS by_taste,
            min(rrank) AS rrank
        FROM candidates
        WHERE author_id != user_id
        GROUP BY user_id, post_id, author_id
    ),
    personal AS (
        SELECT
            k.user_id AS user_id,
            k.post_id AS post_id,
            k.author_id AS author_id,
            -- the learned taste: 0 where the model has no vector for the user or the author
            dotProduct(arrayResize(ut.v, {taste_dims:UInt32}), arrayResize(at.v, {taste_dims:UInt32})) AS taste,
            greatest(dotProduct(arrayResize(ut.v, {taste_dims:UInt32}), arrayResize(pa.audience, {taste_dims:UInt32})), 0)
                AS audience,
            (k.base + {w_audience:Float64} * audience) * (1 + coalesce(a.affinity, 0))
                * (1 + {co_weight:Float64} * k.support)
                * if(k.followed, 1 + {follow_boost:Float64} * pow({recency_decay:Float64}, k.rrank), 1)
                * exp({w_taste:Float64} * taste) AS score,
            multiIf(k.followed, 'followed', k.co_engaged, 'co_engaged', coalesce(a.affinity, 0) > 0, 'affinity',
                    k.by_taste, 'taste', 'hot') AS reason
        FROM candidate_keys AS k
        LEFT JOIN affinity AS a ON a.user_id = k.user_id AND a.author_id = k.author_id
        LEFT JOIN user_taste AS ut ON ut.user_id = k.user_id
        LEFT JOIN author_taste AS at ON at.author_id = k.author_id
        LEFT JOIN post_audience AS pa ON pa.post_id = k.post_id
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
FROM (SELECT user_id, post_id, author_id, score, reason FROM diverse
      UNION ALL SELECT * FROM trending WHERE {shard:UInt32} = 0)  -- once, with the first shard
