-- object: taste_vectors
-- kind: table
-- depends: taste_models
-- The taste model's vectors: one per user and one per author of a version, in one space, so a
-- user's taste for any author is dotProduct(user vector, author vector).
CREATE TABLE IF NOT EXISTS {{ db }}.{{ table("taste_vectors") }} {{ on_cluster }}
(
    version UInt64,
    kind    LowCardinality(String),
    id      UUID,
    v       Array(Float32)
)
ENGINE = {{ engine("MergeTree") }}
PARTITION BY version
ORDER BY (kind, id);

{{ distributed("taste_vectors", "cityHash64(id)") }}
