"""Offline evaluation and weight fitting that never see the future: every model they score with is
trained on what happened before the split, and judged on what users did after it.

With a demo world (whose tastes are known), the evaluation adds its oracle: the world's own
engagement model ranking the posts alive at the split, the ceiling the model's recall is a share of.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from clickhouse_connect.driver.client import Client

from nova_assets.core.recommendations import tastes
from nova_assets.core.recommendations.fit import fit_weights
from nova_assets.core.recommendations.scoring import Lists, ScoringParams, evaluate
from nova_assets.core.world.demo import World
from nova_assets.core.world.oracle import oracle_lists

JUDGED_USERS = """
SELECT DISTINCT user_id FROM events
WHERE event_time >= {split:DateTime64(3, 'UTC')}
  AND event_time < {split:DateTime64(3, 'UTC')} + toIntervalHour({horizon:UInt32}) AND action != 'view'
ORDER BY cityHash64(user_id) LIMIT {n:UInt32}
"""


def eval_window(client: Client, split_ago_s: float, horizon_hours: int) -> tuple[float, int]:
    """The evaluation's split (seconds ago) and horizon: as configured, or, where there is less
    history than twice the split (a young demo), the middle of the history and what follows it."""
    first = client.query("SELECT toUnixTimestamp64Milli(min(event_time)) FROM events").result_rows[0][0]
    span = time.time() - float(first or 0) / 1000.0
    if first and 0 < span < 2 * split_ago_s:
        return span / 2, max(1, math.ceil(span / 2 / 3600))
    return split_ago_s, horizon_hours


def evaluate_before(
    client: Client,
    params: ScoringParams,
    taste: tastes.TasteParams,
    split: float,
    horizon_hours: int,
    k: int = 20,
    extra: dict[str, Lists] | None = None,
    users: list[str] | None = None,
) -> dict[str, Any]:
    """`scoring.evaluate` with a taste model trained on what happened before the split."""
    with _trained_before(client, taste, split) as (version, train_s):
        result = evaluate(client, params, split, horizon_hours, k, taste=version, extra=extra, users=users)
    result["taste_train_s"] = train_s
    return result


def fit_before(
    client: Client, start: ScoringParams, taste: tastes.TasteParams, split: float, horizon_hours: int, sample: int,
    grid: dict[str, tuple[float, ...]] | None = None,
) -> tuple[ScoringParams, list[dict[str, Any]]]:  # fmt: skip
    """`fit.fit_weights` with a taste model trained on what happened before the split."""
    with _trained_before(client, taste, split) as (version, _train_s):
        return fit_weights(client, start, split, horizon_hours, version, sample=sample, grid=grid)


@contextmanager
def _trained_before(client: Client, taste: tastes.TasteParams, split: float) -> Iterator[tuple[tuple[int, int], float]]:
    """A taste model trained on what happened before `split`, as a scratch version ((0, 0) when
    there is nothing to train on) and its training seconds; dropped on leaving."""
    model = tastes.train(client, taste, split)
    version = tastes.scratch(client, model, taste) if len(model.users) else (0, 0)
    try:
        yield version, model.figures["train_s"]
    finally:
        if version[0]:
            tastes.drop(client, version[0])


def judged_users(client: Client, split: float, horizon_hours: int, n: int) -> list[str]:
    """Up to n users who engaged after the split (the same ones every time, by hash)."""
    rows = client.query(JUDGED_USERS, parameters={"split": split, "horizon": horizon_hours, "n": n}).result_rows
    return [str(r[0]) for r in rows]


def oracle_for(world: World, users: list[str], split: float, horizon_hours: int, k: int) -> tuple[Lists, list[str]]:
    """The world's oracle lists for those of `users` it knows, and those users."""
    index = {u: i for i, u in enumerate(world.user_ids())}
    known = [u for u in users if u in index]
    return oracle_lists(world, np.array([index[u] for u in known], dtype=np.int64), split, horizon_hours, k), known


def shares(evaluation: dict[str, Any], baselines: tuple[str, ...], cf: tuple[str, ...]) -> dict[str, float]:
    """The model's recall as a share of the oracle's, and its lift over the best baseline and the best
    collaborative-filtering one (each present strategy counts)."""
    recall = {name: v["recall_at_k"] for name, v in evaluation.items() if isinstance(v, dict) and "recall_at_k" in v}
    model = recall.get("model", 0.0)
    out: dict[str, float] = {}
    if recall.get("oracle"):
        out["share_of_oracle"] = round(model / recall["oracle"], 3)
    best = max((recall[b] for b in baselines if b in recall), default=0.0)
    if best:
        out["lift_recall"] = round(model / best, 2)
    best_cf = max((recall[b] for b in cf if b in recall), default=0.0)
    if best_cf:
        out["lift_vs_cf"] = round(model / best_cf, 2)
    return out


def evaluate_feed(
    client: Client,
    params: ScoringParams,
    taste: tastes.TasteParams,
    split: float,
    horizon_hours: int,
    k: int = 20,
    world: World | None = None,
    users: int = 1500,
) -> dict[str, Any]:
    """The model and its baselines as of a past split and, with the world the data came from, its
    oracle, all judged on the same (up to `users`) people; plus the model's share of the oracle."""
    extra: dict[str, Lists] = {}
    judged: list[str] | None = None
    if world is not None:
        lists, judged = oracle_for(world, judged_users(client, split, horizon_hours, users), split, horizon_hours, k)
        extra["oracle"] = lists
    result = evaluate_before(client, params, taste, split, horizon_hours, k, extra=extra, users=judged)
    result.update(shares(result, ("global_hot", "recency"), ()))
    return result
