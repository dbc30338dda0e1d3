-- Nova app: likes, one per user and post.
CREATE TABLE IF NOT EXISTS public.likes (
    user_id    uuid NOT NULL REFERENCES public.users (id) ON DELETE CASCADE,
    post_id    uuid NOT NULL REFERENCES public.posts (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, post_id)
);
ALTER TABLE public.likes REPLICA IDENTITY FULL;
