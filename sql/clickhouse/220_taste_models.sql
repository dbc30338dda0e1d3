-- object: taste_models
-- kind: table
-- One row per published taste model (user and author vectors factored from the interactions);
-- written only after its vectors and candidates are in, so scoring never reads half a model.
CREATE TABLE IF NOT EXISTS {{ db }}.{{ table("taste_models") }} {{ on_cluster }}
(
    version    UInt64,
    trained_at DateTime64(3, 'UTC') DEFAULT now64(3),
    params     String,
    figures    String,
    weights    String DEFAULT '{}'  -- score weights fitted on a past split with this model's training
)
ENGINE = {{ engine("ReplacingMergeTree", "trained_at") }}
ORDER BY version;

{{ distributed("taste_models", "version") }}
