"""`taste_model`: user and author vectors learned from the interactions, and the score's weights fitted
with them on a past split; `feed_recommendations` scores with the newest one."""

import time
from dataclasses import asdict, fields

import dagster as dg
import orjson

from nova_assets import settings
from nova_assets.core.recommendations import tastes
from nova_assets.core.recommendations.fit import GRID
from nova_assets.core.recommendations.offline import eval_window, fit_before
from nova_assets.core.recommendations.scoring import ScoringParams
from nova_assets.core.schema.ddl import apply_object
from nova_assets.core.schema.sql_files import load_objects
from nova_assets.defs.schema.assets import renderer_for
from nova_assets.defs.tables import frame, table
from nova_assets.resources.clickhouse import ClickHouseResource

DEFAULT_CRON = "7 * * * *"
#: the batch runs (a recompute, a taste-model fit: minutes each) wait for each other: dagster.yaml
#: allows one `nova/batch` run, so two loader runs of a hand-over, one batch run and a cache warm
#: leave the SLO checks a run slot
BATCH_RUN_TAGS = {"nova/batch": "batch"}
TASTE_OBJECTS = [o for o in load_objects() if o.name in ("taste_models", "taste_vectors", "taste_candidates")]
_DEFAULTS = tastes.TasteParams()
MAX_TRAIN_S = 120.0  # the hourly schedule's budget for one training
MIN_USER_COVERAGE = 0.8  # active users the model must have a vector for


class TasteModelConfig(dg.Config):
    """The factorisation (defaults in TasteParams) and the weight fit on a past split."""

    factors: int = _DEFAULTS.factors
    regularization: float = _DEFAULTS.regularization
    alpha: float = _DEFAULTS.alpha
    iterations: int = _DEFAULTS.iterations
    days: int = _DEFAULTS.days
    view_weight: float = _DEFAULTS.view_weight
    per_user: int = _DEFAULTS.per_user
    normalize: bool = _DEFAULTS.normalize
    threads: int = _DEFAULTS.threads
    keep_versions: int = 2
    fit_weights: bool = True
    fit_split_hours_ago: float = 24.0
    fit_horizon_hours: int = 12
    fit_sample: int = 4  # score one user in N per trial: a fit costs a few slices, not recomputes

    def params(self) -> tastes.TasteParams:
        return tastes.TasteParams(**{f.name: getattr(self, f.name) for f in fields(tastes.TasteParams)})


@dg.asset(
    name="taste_model",
    group_name="recommendations",
    deps=[
        dg.AssetKey(name)
        for name in ("user_author_daily", "events", "taste_models", "taste_vectors", "taste_candidates")
    ],
    kinds={"clickhouse", "python"},
    description="User and author vectors factored (implicit ALS) from 90 days of user -> author interactions, "
    "each user's best authors as candidates, and the feed score's weights fitted on a past split.",
    metadata={"sql_file": "sql/clickhouse/220_taste_models.sql", "training": "sql/queries/taste_interactions.sql"},
)
def taste_model(
    context: dg.AssetExecutionContext, config: TasteModelConfig, clickhouse: ClickHouseResource
) -> dg.MaterializeResult:
    params = config.params()
    with clickhouse.ddl_session() as owner:
        for obj in TASTE_OBJECTS:
            apply_object(owner, obj, renderer_for(clickhouse))
    with clickhouse.batch_session() as client:  # yields the CPU to ingestion and reads
        model = tastes.train(client, params, time.time())
        weights: dict[str, float] = {}
        trials: list[dict] = []
        if config.fit_weights and len(model.users):
            split_ago_s, horizon = eval_window(client, config.fit_split_hours_ago * 3600, config.fit_horizon_hours)
            best, trials = fit_before(client, ScoringParams(), params, time.time() - split_ago_s, horizon,
                                      config.fit_sample)  # fmt: skip
            if trials and max(t["recall_at_k"] for t in trials) > 0:
                weights = {name: getattr(best, name) for name in GRID}
        version = tastes.publish(client, model, params, weights)
        dropped = tastes.cleanup(client, keep=config.keep_versions)
        cover = tastes.coverage(client, version)
    context.log.info(f"taste model {version}: {model.figures}, coverage {cover}, weights {weights}")
    metadata: dict[str, dg.RawMetadataValue] = {
        "version": version,
        **model.figures,
        **cover,
        "dropped_versions": dropped,
        "params": dg.MetadataValue.json(asdict(params)),
        "fitted_weights": dg.MetadataValue.json(weights or {"note": "no fit: too little history after the split"}),
    }
    if trials:
        default_recall = trials[0]["recall_at_k"]
        metadata["fit_recall_default"] = default_recall
        metadata["fit_recall_fitted"] = max(t["recall_at_k"] for t in trials)
        metadata["fit"] = table(
            frame(trials),
            {"weight": "tried in turn, the others at the best so far", "recall_at_k": "on the past split, k = 20"},
        )
    return dg.MaterializeResult(metadata=metadata)


def _figures(clickhouse: ClickHouseResource) -> tuple[int, dict]:
    with clickhouse.session() as client:
        rows = client.query("SELECT version, figures FROM taste_models ORDER BY version DESC LIMIT 1").result_rows
    return (int(rows[0][0]), orjson.loads(rows[0][1])) if rows else (0, {})


@dg.asset_check(asset=taste_model, name="taste_training_time", description=f"One training within {MAX_TRAIN_S:.0f} s.")
def taste_training_time(clickhouse: ClickHouseResource) -> dg.AssetCheckResult:
    version, figures = _figures(clickhouse)
    seconds = float(figures.get("train_s", 0.0))
    return dg.AssetCheckResult(
        passed=bool(version) and seconds <= MAX_TRAIN_S,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"train_s": seconds, "budget_s": MAX_TRAIN_S, "version": version},
    )


@dg.asset_check(asset=taste_model, name="taste_loss", description="Training converged: the loss fell and is finite.")
def taste_loss(clickhouse: ClickHouseResource) -> dg.AssetCheckResult:
    version, figures = _figures(clickhouse)
    first, last = float(figures.get("loss_first", 0.0)), float(figures.get("loss", 0.0))
    ok = bool(version) and figures.get("pairs", 0) > 0 and 0.0 <= last <= first
    return dg.AssetCheckResult(
        passed=ok,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"loss_first": first, "loss": last, "pairs": int(figures.get("pairs", 0)), "version": version},
    )


@dg.asset_check(
    asset=taste_model,
    name="taste_coverage",
    description=f"At least {MIN_USER_COVERAGE:.0%} of the users who engaged in the last 7 days have a taste vector.",
)
def taste_coverage(clickhouse: ClickHouseResource) -> dg.AssetCheckResult:
    version, _ = _figures(clickhouse)
    with clickhouse.session() as client:
        cover = tastes.coverage(client, version) if version else {"user_coverage": 0.0}
    return dg.AssetCheckResult(
        passed=bool(version) and cover["user_coverage"] >= MIN_USER_COVERAGE,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={**cover, "target": MIN_USER_COVERAGE, "version": version},
    )


tastes_schedule = dg.ScheduleDefinition(
    name="taste_model_schedule",
    target=dg.AssetSelection.assets(taste_model),
    tags=BATCH_RUN_TAGS,
    cron_schedule=settings.env_str(settings.TASTES_CRON, DEFAULT_CRON),
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Retrain the taste model and refit the score's weights (NOVA_TASTES_CRON, default hourly).",
)
