"""The feed benchmark's judge: the model with weights fitted on an earlier split, against its
baselines (global hot, recency, collaborative filtering) and the world's own oracle, on the same users."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client

from bench.common import SMOKE, clickhouse_server
from nova_assets.core.recommendations import offline
from nova_assets.core.recommendations.baselines import CF_BASELINES, cf_lists
from nova_assets.core.recommendations.fit import GRID
from nova_assets.core.recommendations.scoring import ScoringParams
from nova_assets.core.recommendations.tastes import TasteParams
from nova_assets.core.schema.ddl import apply_all
from nova_assets.core.schema.sql_files import Renderer
from nova_assets.core.world.demo import World, WorldConfig
from nova_assets.core.world.latent import LatentWorld, world2_config
from nova_assets.generate.history import load_history

BASELINES = ("global_hot", "recency", *CF_BASELINES)
STRATEGIES = ("model", *BASELINES, "oracle")


def judge(
    client: Client, world: World, now: float, start: ScoringParams, horizon_h: int = 12, users: int = 1500,
    fit_sample: int = 4,
) -> dict[str, Any]:  # fmt: skip
    """Fit on [now - 2h, now - h), judge on [now - h, now): nothing the fit or the model sees comes after
    what it is judged on. Returns the evaluation, the fitted weights, and the default weights' recall."""
    split = now - horizon_h * 3600
    taste = TasteParams()
    t0 = time.perf_counter()
    grid = {name: GRID[name][:2] for name in list(GRID)[:3]} if SMOKE else None  # smoke: the code path only
    fitted, trials = offline.fit_before(client, start, taste, split - horizon_h * 3600, horizon_h, fit_sample, grid)
    fit_s = time.perf_counter() - t0
    judged = offline.judged_users(client, split, horizon_h, users)
    oracle, judged = offline.oracle_for(world, judged, split, horizon_h, 20)
    t0 = time.perf_counter()
    extra = {"oracle": oracle, **cf_lists(client, judged, split, 20, hours=int(world.config.window_hours))}
    cf_s = time.perf_counter() - t0
    result = offline.evaluate_before(client, fitted, taste, split, horizon_h, 20, extra=extra, users=judged)
    default = offline.evaluate_before(client, start, taste, split, horizon_h, 20, extra={}, users=judged)
    result.update(offline.shares(result, BASELINES, CF_BASELINES))
    result["default_model_recall"] = default["model"]["recall_at_k"]
    result["weights"] = {name: getattr(fitted, name) for name in GRID}
    result["fit_trials"] = len(trials)
    result["fit_s"] = round(fit_s, 1)
    result["cf_s"] = round(cf_s, 1)
    return result


def figures(result: dict[str, Any], suffix: str = "") -> dict[str, Any]:
    """The goal keys of `nova bench feed --json` for one world (suffix "_world2" for the second)."""
    out: dict[str, Any] = {
        f"eval_model_share_of_oracle{suffix}": result.get("share_of_oracle", 0.0),
        f"eval_lift_recall{suffix}": result.get("lift_recall", 0.0),
        f"eval_lift_vs_cf{suffix}": result.get("lift_vs_cf", 0.0),
        f"eval_default_weights_recall{suffix}": result["default_model_recall"],
        f"eval_fitted_weights{suffix}": result["weights"],
        f"eval_users{suffix}": result["model"]["users_evaluated"],
    }
    for name in STRATEGIES:
        if name in result:
            out[f"eval_{name}_recall_at_k{suffix}"] = result[name]["recall_at_k"]
    return out


def rows(result: dict[str, Any], title: str) -> list[tuple[str, str, str]]:
    """Report rows: recall of every ranker, then the model's share of the oracle and its lifts."""
    recall = {n: result[n]["recall_at_k"] for n in STRATEGIES if n in result}
    listing = ", ".join(f"{n} {recall[n]:.4f}" for n in STRATEGIES if n in recall and n != "model")
    return [
        (f"{title}: model recall@20", f"{recall['model']:.4f}",
         f"{listing}; default weights {result['default_model_recall']:.4f}; "
         f"{result['model']['users_evaluated']} users"),
        (f"{title}: share of oracle", f"{result.get('share_of_oracle', 0):.1%}", "goal >= 50%"),
        (f"{title}: lift", f"x{result.get('lift_recall', 0)} best, x{result.get('lift_vs_cf', 0)} CF",
         "goal >= 3x the best baseline, CF included"),
    ]  # fmt: skip


def second_world() -> dict[str, Any]:
    """World 2 (latent-factor tastes, no topics) at the size the issue tried it, judged like the first."""
    users, posts, events, hours = (500, 2_000, 20_000, 60) if SMOKE else (4_000, 16_800, 540_000, 60)
    world = LatentWorld(world2_config(WorldConfig(users=users, post_rate=posts / (hours * 3600))))
    with (
        tempfile.TemporaryDirectory(prefix="nova-bench-world2-") as tmp,
        clickhouse_server(Path(tmp)) as ch,
        ch.session() as client,
    ):
        apply_all(client, Renderer("nova"))
        now = time.time()
        load_history(client, world, now - hours * 3600, now, events)
        # every user in each fit trial: 4,000 users score in seconds, and a sampled fit is noisy here
        return judge(client, world, now, ScoringParams(feed_size=50), fit_sample=1)
