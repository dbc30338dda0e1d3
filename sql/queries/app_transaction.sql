-- Postgres, the Nova app (`nova generate app`): one app transaction of likes, comments, follows,
-- profile edits and post deletes as one set-based statement, so a transaction of any size costs
-- one round trip and one prepared plan (a statement per kind cost the writer ~280 µs of CPU per
-- change). A single statement is its own transaction. A like of a post the user already likes is
-- an unlike, as in the app: the DELETE sees the statement's snapshot, so it removes only the likes
-- that were there before and the INSERT adds only the new ones (a repeat like did nothing and
-- cost a statement; in a world written for minutes, about half of them). Returns the rows each
-- kind changed: a like of a post gone changes nothing; a deleted post's likes and comments go by cascade.
WITH liked AS (
    INSERT INTO likes (user_id, post_id)
    SELECT l.user_id, l.post_id
    FROM unnest(%(like_users)s::uuid[], %(like_posts)s::uuid[]) AS l (user_id, post_id)
    WHERE EXISTS (SELECT 1 FROM posts AS p WHERE p.id = l.post_id)
    ON CONFLICT DO NOTHING
    RETURNING 1
), unliked AS (
    DELETE FROM likes AS k
    USING unnest(%(like_users)s::uuid[], %(like_posts)s::uuid[]) AS l (user_id, post_id)
    WHERE k.user_id = l.user_id AND k.post_id = l.post_id
    RETURNING 1
), commented AS (
    INSERT INTO comments (id, post_id, user_id, body)
    SELECT c.id, c.post_id, c.user_id, c.body
    FROM unnest(
        %(comment_ids)s::uuid[], %(comment_posts)s::uuid[], %(comment_users)s::uuid[], %(comment_bodies)s::text[]
    ) AS c (id, post_id, user_id, body)
    WHERE EXISTS (SELECT 1 FROM posts AS p WHERE p.id = c.post_id)
    RETURNING 1
), followed AS (
    INSERT INTO follows (follower_id, followee_id)
    SELECT f.follower_id, f.followee_id
    FROM unnest(%(followers)s::uuid[], %(followees)s::uuid[]) AS f (follower_id, followee_id)
    ON CONFLICT DO NOTHING
    RETURNING 1
), edited AS (
    UPDATE users AS u SET bio = e.bio, updated_at = now()
    FROM unnest(%(edit_users)s::uuid[], %(edit_bios)s::text[]) AS e (id, bio)
    WHERE u.id = e.id
    RETURNING 1
), deleted AS (
    DELETE FROM posts WHERE id = ANY(%(deleted_posts)s::uuid[])
    RETURNING 1
)
SELECT
    (SELECT count(*) FROM liked) AS "like",
    (SELECT count(*) FROM unliked) AS "unlike",
    (SELECT count(*) FROM commented) AS "comment",
    (SELECT count(*) FROM followed) AS "follow",
    (SELECT count(*) FROM edited) AS "edit",
    (SELECT count(*) FROM deleted) AS "delete"
