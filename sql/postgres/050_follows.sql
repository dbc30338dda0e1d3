-- Nova app: who follows whom (needed to invalidate followers' cached feeds).
CREATE TABLE IF NOT EXISTS public.follows (
    follower_id uuid NOT NULL REFERENCES public.users (id) ON DELETE CASCADE,
    followee_id uuid NOT NULL REFERENCES public.users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (follower_id, followee_id)
);
CREATE INDEX IF NOT EXISTS follows_followee ON public.follows (followee_id);
ALTER TABLE public.follows REPLICA IDENTITY FULL;
