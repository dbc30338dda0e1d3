"""The taste model asset on a world built unlike the demo one: it learns, publishes, is checked,
and the feed scores with it; the evaluation shows the oracle and the model's share of it."""

from __future__ import annotations

import time

import dagster as dg
import pytest

from nova_assets import settings
from nova_assets.core.recommendations import offline, tastes
from nova_assets.core.recommendations.baselines import CF_BASELINES, cf_lists
from nova_assets.core.recommendations.scoring import ScoringParams, current_taste
from nova_assets.core.world.config import WorldConfig
from nova_assets.core.world.demo import World
from nova_assets.core.world.latent import LatentWorld, world2_config
from nova_assets.defs.recommendations import defs as recommendation_defs
from nova_assets.defs.recommendations.assets import feed_recommendations
from nova_assets.defs.recommendations.tastes import taste_model
from nova_assets.generate.history import load_history
from nova_assets.resources import ClickHouseResource

HOURS = 60
CONFIG = world2_config(WorldConfig(users=600, post_rate=2_400 / (HOURS * 3600)))


@pytest.fixture
def demo(clickhouse: ClickHouseResource) -> tuple[ClickHouseResource, World, float]:
    """The demo world (default clock and tastes, as `nova dev` runs it) at 600 users."""
    world = World(WorldConfig(users=600))
    now = time.time()
    with clickhouse.session() as client:
        load_history(client, world, now - 30 * 3600, now, 30_000)
    return clickhouse, world, now


@pytest.fixture
def latent(clickhouse: ClickHouseResource) -> tuple[ClickHouseResource, LatentWorld, float]:
    world = LatentWorld(CONFIG)
    now = time.time()
    with clickhouse.session() as client:
        load_history(client, world, now - HOURS * 3600, now, 40_000)
    return clickhouse, world, now


def test_taste_model_is_published_checked_and_scored_with(
    demo: tuple[ClickHouseResource, World, float], monkeypatch: pytest.MonkeyPatch
) -> None:
    ch, world, _now = demo
    monkeypatch.setenv(settings.DEMO_WORLD, f"{world.config.seed}:{world.config.users}")
    checks = [c for c in recommendation_defs.asset_checks or [] if isinstance(c, dg.AssetChecksDefinition)]
    metas = []
    for fit in (False, True):  # two versions, one kept: the older is dropped; the second fits weights
        config = {"fit_weights": fit, "fit_sample": 4, "fit_split_hours_ago": 12.0, "fit_horizon_hours": 6,
                  "keep_versions": 1}  # fmt: skip
        result = dg.materialize(
            [taste_model, *checks], resources={"clickhouse": ch},
            run_config={"ops": {"taste_model": {"config": config}}},
        )  # fmt: skip
        assert result.success
        metas.append({k: v.value for k, v in result.asset_materializations_for_node("taste_model")[0].metadata.items()})
    meta = metas[-1]
    assert metas[0]["fitted_weights"] == {"note": "no fit: too little history after the split"}
    evaluations = result.get_asset_check_evaluations()
    assert {e.check_name for e in evaluations} == {"taste_training_time", "taste_loss", "taste_coverage"}
    assert all(e.passed for e in evaluations), [(e.check_name, e.metadata) for e in evaluations]
    assert meta["users"] >= 550 and meta["authors"] >= 80 and meta["loss"] < meta["loss_first"]
    assert meta["user_coverage"] >= 0.8
    assert meta["fit_recall_fitted"] >= meta["fit_recall_default"] > 0  # the fit keeps the best it saw
    assert "fit" in meta and set(meta["fitted_weights"]) >= {"w_taste", "follow_boost", "per_author"}
    with ch.session() as client:
        version, dims = current_taste(client)
        assert (version, dims) == (meta["version"], 32)
        assert client.query("SELECT count() FROM taste_models").result_rows[0][0] == 1
        parts = client.query(
            "SELECT uniqExact(version), max(c) FROM (SELECT version, user_id, count() AS c FROM taste_candidates "
            "GROUP BY version, user_id)"
        ).result_rows[0]
        assert parts[0] == 1 and parts[1] == tastes.TasteParams().per_user

    evaluation = {"eval_split_hours_ago": 6.0, "eval_horizon_hours": 6}
    feed = dg.materialize(
        [feed_recommendations], resources={"clickhouse": ch},
        run_config={"ops": {"feed_recommendations": {"config": evaluation}}},
    )  # fmt: skip
    assert feed.success
    fmeta = {k: v.value for k, v in feed.asset_materializations_for_node("feed_recommendations")[0].metadata.items()}
    assert fmeta["taste_version"] == version
    assert fmeta["weights"]["fitted_by_taste_model"] == version
    rows = {r.data["strategy"]: r.data for r in fmeta["evaluation"].records}
    assert {"model", "global_hot", "recency", "oracle", "model / oracle (share of the knowable)"} <= set(rows)
    assert rows["oracle"]["recall_at_k"] > rows["model"]["recall_at_k"] > 0
    assert fmeta["eval_model_share_of_oracle"] == rows["model / oracle (share of the knowable)"]["recall_at_k"]


def test_learned_tastes_find_most_of_what_is_knowable(latent: tuple[ClickHouseResource, LatentWorld, float]) -> None:
    """On the latent world, weights fitted on one split and judged on the next: at least half the
    oracle's recall, and well above popularity and collaborative filtering."""
    ch, world, now = latent
    split = now - 12 * 3600
    with ch.session() as client:
        fitted, _ = offline.fit_before(
            client, ScoringParams(feed_size=50), tastes.TasteParams(), split - 12 * 3600, 12, 1
        )
        users = offline.judged_users(client, split, 12, 1_000)
        oracle, users = offline.oracle_for(world, users, split, 12, 20)
        extra = {"oracle": oracle, **cf_lists(client, users, split, 20, hours=48)}
        result = offline.evaluate_before(client, fitted, tastes.TasteParams(), split, 12, 20, extra=extra, users=users)
    shares = offline.shares(result, ("global_hot", "recency", *CF_BASELINES), CF_BASELINES)
    assert result["model"]["users_evaluated"] >= 300
    assert shares["share_of_oracle"] >= 0.5, (shares, result)
    assert shares["lift_vs_cf"] >= 2.0 and shares["lift_recall"] >= 1.5, (shares, result)
