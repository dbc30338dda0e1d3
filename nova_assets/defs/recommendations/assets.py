"""`feed_recommendations`: every covered user's ranked feed, recomputed on a schedule, published atomically."""

import os
import time
from dataclasses import fields

import dagster as dg

from nova_assets.defs.recommendations.scoring import ScoringParams, cleanup, evaluate, recompute
from nova_assets.defs.schema.assets import renderer_for
from nova_assets.defs.schema.ddl import apply_object
from nova_assets.defs.schema.sql_files import load_objects
from nova_assets.defs.slo.freshness import FRESHNESS
from nova_assets.resources.clickhouse import ClickHouseResource

SCHEDULE = "NOVA_RECOMMENDATIONS_CRON"
DEFAULT_CRON = "*/10 * * * *"
_OBJECT = next(o for o in load_objects() if o.name == "feed_recommendations")
_DEFAULTS = ScoringParams()


class RecommendationsConfig(dg.Config):
    """Scoring weights and limits (defaults documented in ScoringParams) and the offline evaluation."""

    w_click: float = _DEFAULTS.w_click
    w_like: float = _DEFAULTS.w_like
    w_comment: float = _DEFAULTS.w_comment
    w_share: float = _DEFAULTS.w_share
    half_life_hours: float = _DEFAULTS.half_life_hours
    gravity: float = _DEFAULTS.gravity
    window_hours: int = _DEFAULTS.window_hours
    engagement_weight: float = _DEFAULTS.engagement_weight
    view_prior: float = _DEFAULTS.view_prior
    affinity_scale: float = _DEFAULTS.affinity_scale
    follow_boost: float = _DEFAULTS.follow_boost
    hot_posts: int = _DEFAULTS.hot_posts
    feed_size: int = _DEFAULTS.feed_size
    per_author: int = _DEFAULTS.per_author
    keep_versions: int = 2
    evaluate: bool = True
    eval_split_hours_ago: float = 24.0
    eval_horizon_hours: int = 24
    eval_k: int = 20

    def params(self) -> ScoringParams:
        return ScoringParams(**{f.name: getattr(self, f.name) for f in fields(ScoringParams)})


@dg.asset(
    name="feed_recommendations",
    freshness_policy=FRESHNESS["feed_recommendations"],
    group_name="recommendations",
    deps=[dg.AssetKey(d) for d in _OBJECT.depends],
    kinds={"clickhouse", "sql"},
    description="Ranked posts per user (followed authors + hot posts, decayed engagement x (1 + affinity), "
    "k per author), published atomically as a new version; global trending under the nil user.",
    metadata={
        "sql_file": "sql/clickhouse/200_feed_recommendations.sql",
        "scoring": "sql/queries/feed_candidates_scored.sql",
    },
)
def feed_recommendations(
    context: dg.AssetExecutionContext, config: RecommendationsConfig, clickhouse: ClickHouseResource
) -> dg.MaterializeResult:
    params = config.params()
    with clickhouse.session() as client:
        created = apply_object(client, _OBJECT, renderer_for(clickhouse)).created
        figures = recompute(client, params)
        dropped = cleanup(client, keep=config.keep_versions)
        evaluation = (
            evaluate(
                client,
                params,
                split=time.time() - config.eval_split_hours_ago * 3600,
                horizon_hours=config.eval_horizon_hours,
                k=config.eval_k,
            )
            if config.evaluate
            else {}
        )
    context.log.info(f"published version {figures['version']}: {figures}; evaluation {evaluation}")
    metadata: dict[str, dg.RawMetadataValue] = {**figures, "dropped_versions": dropped, "created": created}
    for strategy in ("model", "global_hot", "recency"):
        for metric, value in evaluation.get(strategy, {}).items():
            metadata[f"eval_{strategy}_{metric}"] = value
    if evaluation:
        metadata["evaluation"] = dg.MetadataValue.json(evaluation)
    return dg.MaterializeResult(metadata=metadata)


recommendations_schedule = dg.ScheduleDefinition(
    name="feed_recommendations_schedule",
    target=dg.AssetSelection.assets(feed_recommendations),
    cron_schedule=os.environ.get(SCHEDULE, DEFAULT_CRON),
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Recompute every user's feed (NOVA_RECOMMENDATIONS_CRON, default every 10 minutes).",
)
