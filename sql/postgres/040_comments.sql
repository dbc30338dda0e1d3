-- Nova app: comments on posts.
CREATE TABLE IF NOT EXISTS public.comments (
    id         uuid PRIMARY KEY,
    post_id    uuid NOT NULL REFERENCES public.posts (id) ON DELETE CASCADE,
    user_id    uuid NOT NULL REFERENCES public.users (id) ON DELETE CASCADE,
    body       text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE public.comments REPLICA IDENTITY FULL;
