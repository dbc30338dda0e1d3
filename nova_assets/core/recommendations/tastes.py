"""The learned taste model: user and author vectors factored from who engaged with whom.

Affinity alone knows only the authors a user already engaged with. Factoring the user x author
matrix of the last `days` days (implicit-feedback ALS, confidence 1 + alpha * log1p(weight))
places users and authors in one taste space, so a user's taste for an author they have not met
is a dot product. Authors, not posts, are the items: posts live for two days, authors for years,
so a post published after training still has a taste score through its author.

A trained model is published as a version (like feed versions): its vectors and each user's
`per_user` best authors (candidates for the scoring SQL) are written first, then the row in
`taste_models` that makes it current. Scoring reads only the newest published version.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from clickhouse_connect.driver.client import Client

from nova_assets.core.recommendations.scoring import query_text

if TYPE_CHECKING:  # training's libraries load when a model is trained, not with every Dagster process (~0.4 s)
    import pandas as pd

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TasteParams:
    """Size and regularisation of the factorisation (defaults chosen on the benchmark's worlds)."""

    factors: int = 32
    regularization: float = 0.05
    alpha: float = 4.0  # confidence of an observed pair: 1 + alpha * log1p(weighted interactions)
    iterations: int = 12
    days: int = 90  # history the model learns from (the affinity table's horizon)
    view_weight: float = 0.25  # a view says less about taste than a like; passers-by view too
    per_user: int = 40  # best authors per user written as taste candidates
    normalize: bool = True  # cosine, not dot: an author everyone views is not everyone's taste
    threads: int = 2


@dataclass
class TasteModel:
    """Trained vectors and the figures the asset reports."""

    users: pd.Index  # user ids (UUID) in row order
    authors: pd.Index  # author ids in row order
    user_vectors: np.ndarray
    author_vectors: np.ndarray
    figures: dict[str, Any]


def train(client: Client, params: TasteParams, as_of: float) -> TasteModel:
    """Factor the user x author interactions of the `days` before `as_of`."""
    import pandas as pd  # lazy, see the TYPE_CHECKING import
    from scipy.sparse import csr_matrix
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    frame = client.query_df(
        query_text("taste_interactions"),
        parameters={"as_of": int(as_of), "days": params.days, "view_weight": params.view_weight},
    )
    if len(frame) == 0 or "user_id" not in frame:
        empty = np.zeros((0, params.factors), np.float32)
        figures = {"pairs": 0, "users": 0, "authors": 0, "loss": 0.0, "loss_first": 0.0, "train_s": 0.0}
        return TasteModel(pd.Index([]), pd.Index([]), empty, empty, figures)
    users = pd.Index(frame["user_id"].unique())
    authors = pd.Index(frame["author_id"].unique())
    rows = users.get_indexer(frame["user_id"])
    cols = authors.get_indexer(frame["author_id"])
    confidence = np.log1p(frame["weight"].to_numpy(dtype=np.float64)).astype(np.float32)
    matrix = csr_matrix((confidence, (rows, cols)), shape=(len(users), len(authors)))
    from implicit.cpu.als import AlternatingLeastSquares  # imports numba-free C++; slow-ish to import

    losses: list[float] = []
    with threadpool_limits(1, "blas"):  # implicit parallelises itself; BLAS threads on top only contend
        model = AlternatingLeastSquares(
            factors=params.factors, regularization=params.regularization, alpha=params.alpha,
            iterations=params.iterations, calculate_training_loss=True, num_threads=params.threads, random_state=42,
        )  # fmt: skip
        model.fit(matrix, show_progress=False, callback=lambda _i, _s, loss: losses.append(float(loss or 0.0)))
    user_vectors = np.asarray(model.user_factors, dtype=np.float32)
    author_vectors = np.asarray(model.item_factors, dtype=np.float32)
    if params.normalize:
        user_vectors /= np.maximum(np.linalg.norm(user_vectors, axis=1, keepdims=True), 1e-9)
        author_vectors /= np.maximum(np.linalg.norm(author_vectors, axis=1, keepdims=True), 1e-9)
    figures = {
        "pairs": int(matrix.nnz),
        "users": len(users),
        "authors": len(authors),
        "loss": round(losses[-1], 6) if losses else 0.0,
        "loss_first": round(losses[0], 6) if losses else 0.0,
        "train_s": round(time.perf_counter() - started, 3),
    }
    return TasteModel(users, authors, user_vectors, author_vectors, figures)


def best_authors(model: TasteModel, per_user: int, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each user's `per_user` highest-taste authors: (user row, author row, taste)."""
    k = min(per_user, len(model.authors))
    if k == 0 or len(model.users) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    user_rows, author_rows, tastes = [], [], []
    for lo in range(0, len(model.users), chunk):
        scores = model.user_vectors[lo : lo + chunk] @ model.author_vectors.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        user_rows.append(np.repeat(np.arange(lo, lo + len(scores)), k))
        author_rows.append(top.ravel())
        tastes.append(np.take_along_axis(scores, top, axis=1).ravel())
    return np.concatenate(user_rows), np.concatenate(author_rows), np.concatenate(tastes)


def write(client: Client, model: TasteModel, params: TasteParams, version: int) -> None:
    """Write a model's vectors and candidates under `version` (not yet current: see `publish`)."""
    import pyarrow as pa  # lazy, as pandas

    vectors = pa.table({
        "version": pa.array(np.full(len(model.users) + len(model.authors), version, np.uint64)),
        "kind": pa.array(["user"] * len(model.users) + ["author"] * len(model.authors)),
        "id": pa.array([str(x) for x in model.users] + [str(x) for x in model.authors]),
        "v": pa.array(list(np.concatenate([model.user_vectors, model.author_vectors]))),
    })  # fmt: skip
    client.insert_arrow("taste_vectors", vectors)
    u, a, taste = best_authors(model, params.per_user)
    users, authors = np.asarray(model.users.astype(str)), np.asarray(model.authors.astype(str))
    client.insert_arrow(
        "taste_candidates",
        pa.table({"version": pa.array(np.full(len(u), version, np.uint64)), "user_id": pa.array(users[u]),
                  "author_id": pa.array(authors[a]), "taste": pa.array(taste)}),
    )  # fmt: skip


def publish(client: Client, model: TasteModel, params: TasteParams, weights: dict[str, float] | None = None) -> int:
    """Write the vectors and candidates of a new version, then the row that makes it current."""
    version = int(time.time() * 1000)
    write(client, model, params, version)
    client.insert(
        "taste_models",
        [[version, orjson.dumps(asdict(params)).decode(), orjson.dumps(model.figures).decode(),
          orjson.dumps(weights or {}).decode()]],
        column_names=["version", "params", "figures", "weights"],
    )  # fmt: skip
    return version


def scratch(client: Client, model: TasteModel, params: TasteParams) -> tuple[int, int]:
    """Write a model that is never current (for an evaluation or a fit as of a past split) under a
    version no published one can have (published versions are epoch milliseconds); drop it after."""
    version = secrets.randbelow(2**31) + 2
    write(client, model, params, version)
    return version, params.factors


def drop(client: Client, version: int) -> None:
    for table in ("taste_vectors", "taste_candidates"):
        client.command(f"ALTER TABLE {table} DROP PARTITION {int(version)}")  # our own table and integer


def fitted_weights(client: Client, version: int) -> dict[str, float]:
    """The score weights fitted with a published model ({} when none were)."""
    rows = client.query("SELECT weights FROM taste_models WHERE version = {v:UInt64}", parameters={"v": version})
    return dict(orjson.loads(rows.result_rows[0][0])) if rows.result_rows else {}


def coverage(client: Client, version: int, days: int = 7) -> dict[str, float]:
    """Share of the users and authors active in the last `days` days that the model has a vector for."""
    row = client.query(query_text("taste_coverage"), parameters={"v": version, "days": days}).result_rows[0]
    active_users, covered_users, active_authors, covered_authors = (int(x) for x in row)
    return {
        "active_users": active_users,
        "user_coverage": round(covered_users / active_users, 4) if active_users else 1.0,
        "active_authors": active_authors,
        "author_coverage": round(covered_authors / active_authors, 4) if active_authors else 1.0,
    }


def cleanup(client: Client, keep: int = 2) -> list[int]:
    """Drop the vectors and candidates of all but the newest `keep` published models (and of failed
    trainings older than the newest model)."""
    published = [int(r[0]) for r in client.query("SELECT version FROM taste_models ORDER BY version DESC").result_rows]
    keep_set, newest = set(published[:keep]), (published[0] if published else 0)
    present = client.query(
        "SELECT DISTINCT table, partition FROM system.parts WHERE database = currentDatabase() "
        "AND table IN ('taste_vectors', 'taste_candidates') AND active"
    ).result_rows
    dropped = set()
    for table, partition in present:
        version = int(partition)
        if version in keep_set or version > newest:  # newer: a training in progress
            continue
        client.command(f"ALTER TABLE {table} DROP PARTITION {version}")  # our own table and integer
        dropped.add(version)
    if published[keep:]:
        client.command("DELETE FROM taste_models WHERE version < {v:UInt64}", parameters={"v": min(keep_set)})
    return sorted(dropped)
