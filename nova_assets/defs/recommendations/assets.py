"""`feed_recommendations`: every covered user's ranked feed, recomputed on a schedule, published atomically."""

import time
from dataclasses import fields, replace
from typing import TYPE_CHECKING

import dagster as dg
from clickhouse_connect.driver.client import Client

from nova_assets import settings
from nova_assets.core.recommendations import tastes
from nova_assets.core.recommendations.offline import eval_window, evaluate_feed
from nova_assets.core.recommendations.scoring import NIL_USER, ScoringParams, cleanup, current_taste, recompute
from nova_assets.core.schema.ddl import apply_object
from nova_assets.core.schema.sql_files import load_objects
from nova_assets.core.world.demo import from_env
from nova_assets.defs.recommendations.tastes import BATCH_RUN_TAGS, TASTE_OBJECTS
from nova_assets.defs.schema.assets import renderer_for
from nova_assets.defs.tables import table
from nova_assets.resources.clickhouse import ClickHouseResource

if TYPE_CHECKING:  # pandas loads lazily: ~0.4 s of CPU at every run's start, for a few tables of metadata
    import pandas as pd

SCHEDULE = settings.RECOMMENDATIONS_CRON
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
    recency_decay: float = _DEFAULTS.recency_decay
    follow_recent: int = _DEFAULTS.follow_recent
    w_taste: float = _DEFAULTS.w_taste
    w_audience: float = _DEFAULTS.w_audience
    co_weight: float = _DEFAULTS.co_weight
    co_window_hours: int = _DEFAULTS.co_window_hours
    co_recent: int = _DEFAULTS.co_recent
    co_fanout: int = _DEFAULTS.co_fanout
    co_min_support: int = _DEFAULTS.co_min_support
    hot_posts: int = _DEFAULTS.hot_posts
    feed_size: int = _DEFAULTS.feed_size
    per_author: int = _DEFAULTS.per_author
    use_fitted_weights: bool = True  # the taste model's fitted weights replace the ones above
    keep_versions: int = 2
    evaluate: bool = True
    # the evaluation judges a split a day back: it changes with the taste model, not every recompute,
    # and costs more than the recompute itself, so runs in between carry the last one forward
    eval_every_minutes: float = 60.0
    eval_users: int = 1500  # with a demo world: users judged (those its oracle ranks for too)
    eval_split_hours_ago: float = 24.0
    eval_horizon_hours: int = 24
    eval_k: int = 20

    def params(self) -> ScoringParams:
        return ScoringParams(**{f.name: getattr(self, f.name) for f in fields(ScoringParams)})


STRATEGIES = ("model", "global_hot", "recency", "oracle")
BASELINES = ("global_hot", "recency")
METRICS = ("hit_rate_at_k", "recall_at_k", "ndcg_at_k", "catalog_coverage", "author_diversity")


def evaluation_frame(evaluation: dict) -> "pd.DataFrame":
    """Strategies as rows, metrics as columns, plus the model's lift over the best baseline per metric
    and, with an oracle (a demo world), the model's share of it."""
    rows = [{"strategy": name, **evaluation[name]} for name in STRATEGIES if name in evaluation]
    import pandas as pd  # lazy, see the TYPE_CHECKING import

    frame = pd.DataFrame(rows, columns=["strategy", "users_evaluated", *METRICS])
    ratios: list[dict[str, object]] = []
    if "model" in evaluation and any(b in evaluation for b in BASELINES):
        lift: dict[str, object] = {"strategy": "model / best baseline"}
        for metric in METRICS:
            best = max(evaluation[b][metric] for b in BASELINES if b in evaluation)
            lift[metric] = round(evaluation["model"][metric] / best, 3) if best else None
        ratios.append(lift)
    if "model" in evaluation and "oracle" in evaluation:
        oracle = evaluation["oracle"]
        share = {m: round(evaluation["model"][m] / oracle[m], 3) if oracle[m] else None for m in METRICS}
        ratios.append({"strategy": "model / oracle (share of the knowable)", **share})
    return pd.concat([frame, pd.DataFrame(ratios)], ignore_index=True) if ratios else frame


SAMPLE_FEEDS = """
SELECT toString(user_id) AS user, rank, toString(post_id) AS post, toString(author_id) AS author,
       round(score, 4) AS score, toString(reason) AS why
FROM feed_recommendations
WHERE version = {version:UInt64} AND rank <= {k:UInt16} AND user_id IN (
    SELECT user_id FROM feed_recommendations
    WHERE version = {version:UInt64} AND user_id != {nil:UUID} AND rank = 1
    ORDER BY cityHash64(user_id) LIMIT {users:UInt32})
ORDER BY user, rank
"""


def sample_feeds(client: Client, version: int, users: int = 3, k: int = 10) -> "pd.DataFrame":
    """The top k of a few users (the same ones every run while they have feeds), with why each post is there."""
    return client.query_df(SAMPLE_FEEDS, parameters={"version": version, "k": k, "users": users, "nil": NIL_USER})


def _carried_evaluation(context: dg.AssetExecutionContext, key: str, every_s: float) -> dict[str, dg.MetadataValue]:
    """The last materialization's evaluation, when it judged the same taste model and settings
    less than `every_s` ago: its figures, carried into this materialization's metadata."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey("feed_recommendations"))
    materialization = event.asset_materialization if event is not None else None
    if materialization is None:
        return {}
    last = materialization.metadata
    at, of = last.get("evaluated_at"), last.get("evaluation_of")
    if at is None or of is None or of.value != key or time.time() - float(at.value) >= every_s:
        return {}
    return {k: v for k, v in last.items() if k.startswith("eval")}  # eval_*, evaluation, evaluated_at, …


@dg.asset(
    name="feed_recommendations",
    group_name="recommendations",
    deps=[dg.AssetKey(d) for d in _OBJECT.depends] + [dg.AssetKey("taste_model")],
    kinds={"clickhouse", "sql"},
    description="Ranked posts per user (followed authors, posts co-engaged with the user's recent ones, hot "
    "posts; decayed engagement x (1 + affinity) x signal weights, k per author), published atomically as a "
    "new version; global trending under the nil user.",
    metadata={
        "sql_file": "sql/clickhouse/200_feed_recommendations.sql",
        "scoring": "sql/queries/feed_candidates_scored.sql",
    },
)
def feed_recommendations(
    context: dg.AssetExecutionContext, config: RecommendationsConfig, clickhouse: ClickHouseResource
) -> dg.MaterializeResult:
    params = config.params()
    with clickhouse.ddl_session() as owner:
        created = apply_object(owner, _OBJECT, renderer_for(clickhouse)).created
        for obj in TASTE_OBJECTS:  # read by the scoring SQL before the first taste model exists
            apply_object(owner, obj, renderer_for(clickhouse))
    with clickhouse.batch_session() as client:  # yields the CPU to ingestion and reads
        taste = current_taste(client)
        fitted = tastes.fitted_weights(client, taste[0]) if taste[0] and config.use_fitted_weights else {}
        params = replace(params, **{k: type(getattr(params, k))(v) for k, v in fitted.items() if hasattr(params, k)})
        figures = recompute(client, params, taste=taste)
        dropped = cleanup(client, keep=config.keep_versions)
        key = f"taste {taste[0]}; " + ", ".join(
            f"{k}={getattr(config, k)}" for k in ("eval_split_hours_ago", "eval_horizon_hours", "eval_k", "eval_users")
        )
        carried = _carried_evaluation(context, key, config.eval_every_minutes * 60) if config.evaluate else {}
        evaluation: dict = {}
        if config.evaluate and not carried:
            split_ago_s, horizon_hours = eval_window(
                client, config.eval_split_hours_ago * 3600, config.eval_horizon_hours
            )
            evaluation = evaluate_feed(
                client, params, tastes.TasteParams(), time.time() - split_ago_s, horizon_hours, config.eval_k,
                world=from_env(), users=config.eval_users,
            )  # fmt: skip
        preview = sample_feeds(client, figures["version"])
    context.log.info(f"published version {figures['version']}: {figures}; evaluation {evaluation}")
    metadata: dict[str, dg.RawMetadataValue] = {**figures, "dropped_versions": dropped, "created": created}
    metadata["weights"] = dg.MetadataValue.json(
        {"fitted_by_taste_model": taste[0] if fitted else None, **{k: getattr(params, k) for k in fitted}}
    )
    for strategy in STRATEGIES:
        for metric, value in evaluation.get(strategy, {}).items():
            metadata[f"eval_{strategy}_{metric}"] = value
    if "share_of_oracle" in evaluation:
        metadata["eval_model_share_of_oracle"] = evaluation["share_of_oracle"]
    metadata.update(carried)
    if evaluation:
        metadata["evaluated_at"] = dg.MetadataValue.timestamp(time.time())
        metadata["evaluation_of"] = key
        metadata["evaluation"] = table(
            evaluation_frame(evaluation),
            {"strategy": f"top {evaluation['k']}, features and taste model from before the split, judged on the "
             "next hours; oracle: the demo world's own engagement model"},
        )  # fmt: skip
    why = "followed author, co-engaged with the user's recent posts, affinity with the author, or hot"
    metadata["sample_feeds"] = table(preview, {"why": why})
    return dg.MaterializeResult(metadata=metadata)


recommendations_schedule = dg.ScheduleDefinition(
    name="feed_recommendations_schedule",
    target=dg.AssetSelection.assets(feed_recommendations),
    tags=BATCH_RUN_TAGS,
    cron_schedule=settings.env_str(SCHEDULE, DEFAULT_CRON),
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Recompute every user's feed (NOVA_RECOMMENDATIONS_CRON, default every 10 minutes).",
)
