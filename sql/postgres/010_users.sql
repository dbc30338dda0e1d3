-- Nova app: user profiles. REPLICA IDENTITY FULL so Debezium delete events carry the whole row.
CREATE TABLE IF NOT EXISTS public.users (
    id           uuid PRIMARY KEY,
    username     text NOT NULL UNIQUE,
    display_name text NOT NULL DEFAULT '',
    bio          text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE public.users REPLICA IDENTITY FULL;
