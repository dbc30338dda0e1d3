-- Nova app: posts.
CREATE TABLE IF NOT EXISTS public.posts (
    id         uuid PRIMARY KEY,
    author_id  uuid NOT NULL REFERENCES public.users (id) ON DELETE CASCADE,
    body       text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS posts_author_created ON public.posts (author_id, created_at DESC);
ALTER TABLE public.posts REPLICA IDENTITY FULL;
