-- object: taste_candidates
-- kind: table
-- depends: taste_models
-- Each user's best authors by the taste model (including authors they never engaged with): the
-- scoring SQL takes these authors' best posts as candidates.
CREATE TABLE IF NOT EXISTS {{ db }}.{{ table("taste_candidates") }} {{ on_cluster }}
(
    version   UInt64,
    user_id   UUID,
    author_id UUID,
    taste     Float32
)
ENGINE = {{ engine("MergeTree") }}
PARTITION BY version
ORDER BY (user_id, author_id);

{{ distributed("taste_candidates", "cityHash64(user_id)") }}
