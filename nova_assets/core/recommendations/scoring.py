"""Feed scoring in ClickHouse SQL, atomic publication of versions, and offline evaluation.

The SQL lives in `sql/queries/`; every value is bound. A recompute inserts all rows of a new
version (its own partition) and only then records the version in `feed_versions`; readers
always read the newest recorded version, so they never see a half-written feed.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client

from nova_assets.core.schema.sql_files import SQL_ROOT

QUERIES = SQL_ROOT / "queries"
NIL_USER = uuid.UUID(int=0)
EVAL_VERSION = 1  # never published; holds nothing after an evaluation


def query_text(name: str) -> str:
    return (QUERIES / f"{name}.sql").read_text()


@dataclass(frozen=True)
class ScoringParams:
    """Weights and limits of the feed score (see sql/queries/feed_candidates_scored.sql)."""

    w_click: float = 1.0  # a click is the weakest positive signal
    w_like: float = 3.0
    w_comment: float = 5.0
    w_share: float = 8.0  # sharing puts the post in front of others: strongest signal
    half_life_hours: float = 6.0  # engagement loses half its weight every 6 hours
    gravity: float = 1.8  # Hacker News age gravity
    window_hours: int = 72  # posts seen in the last 3 days are candidates
    engagement_weight: float = 10.0  # weight of the engagement rate next to hotness
    view_prior: float = 20.0  # views added to the denominator so 1 view + 1 like is not a 100% rate
    affinity_scale: float = 3.0  # log1p(affinity) / scale; (1 + affinity) multiplies the score
    follow_boost: float = 5.0  # a followed author's newest post scores (1 + boost) times higher
    recency_decay: float = 1.0  # ... and the next-newest (1 + boost * decay), and so on (1: all alike)
    follow_recent: int = 5  # newest posts per followed author that are candidates
    w_taste: float = 1.0  # the learned taste multiplies the score by exp(w_taste * taste); fitted, see fit.py
    w_audience: float = 0.0  # + w_audience * (user . the post's recent audience) next to the base score; fitted
    co_weight: float = 10.0  # co-engaged posts score (1 + co_weight * support) times higher (support: summed cosine)
    co_window_hours: int = 24  # the user's recent engagements, and the co-engagement pairs, come from here
    co_recent: int = 20  # a user's last engagements that seed co-engagement candidates (bounds the self-join)
    co_fanout: int = 10  # co-engaged posts kept per post (the strongest pairs)
    co_min_support: int = 1  # a pair must be engaged with by at least this many users
    hot_posts: int = 300  # global candidates per user
    feed_size: int = 100  # N: posts kept per user
    per_author: int = 3  # k: at most k posts per author in a user's top N

    def bound(
        self, as_of: float, taste: tuple[int, int] = (0, 0), sample: int = 1, shard: int = 0,
        only_users: list[str] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """The SQL's parameters as of `as_of`, with the taste model (version, dims) to score with;
        the users of shard `shard` of `sample` by hash are scored (1: all), only `only_users` if given."""
        return {**asdict(self), "as_of": int(as_of), "taste_version": taste[0], "taste_dims": taste[1],
                "sample": sample, "shard": shard, "only_users": only_users or []}  # fmt: skip


#: users scored by one statement. Each statement repeats the per-post work (~6 s at 100k posts), so
#: fewer is faster, but memory grows with the users: 50k users / 10M events took the server to
#: 6.6 GB RSS in one statement (28 s), 3.4 GB in three of ~17k (41 s)
USERS_PER_SHARD = 20_000


def shards_for(client: Client, as_of: float) -> int:
    """How many statements a recompute splits its users into (by hash), from the users with 90-day
    affinity: the bulk of who is scored."""
    users = client.query(
        "SELECT uniq(user_id) FROM user_author_daily WHERE day > toDate({as_of:DateTime('UTC')}) - 90",
        parameters={"as_of": int(as_of)},
    ).result_rows[0][0]
    return max(1, -(-int(users or 0) // USERS_PER_SHARD))


def current_taste(client: Client) -> tuple[int, int]:
    """The newest published taste model and its vectors' length; (0, 0) before the first."""
    version = int(client.query("SELECT max(version) FROM taste_models").result_rows[0][0] or 0)
    if not version:
        return (0, 0)
    dims = client.query(
        "SELECT any(length(v)) FROM taste_vectors WHERE version = {v:UInt64}", parameters={"v": version}
    ).result_rows[0][0]
    return (version, int(dims or 0))


def latest_version(client: Client) -> int | None:
    """The newest published version (what every reader reads), None before the first."""
    row = client.query("SELECT max(version), count() FROM feed_versions").result_rows[0]
    return int(row[0]) if row[1] else None


def recompute(
    client: Client, params: ScoringParams, as_of: float | None = None, taste: tuple[int, int] | None = None
) -> dict[str, Any]:
    """Write a complete new version and publish it; returns figures for the materialization."""
    as_of = as_of if as_of is not None else time.time()
    taste = taste if taste is not None else current_taste(client)
    version = int(time.time() * 1000)
    started = time.perf_counter()
    sql = (
        "INSERT INTO feed_recommendations (version, user_id, rank, post_id, author_id, score, reason, computed_at) "
        "SELECT {version:UInt64}, user_id, rank, post_id, author_id, score, reason, now64(3) FROM ("
        + query_text("feed_candidates_scored")
        + ")"
    )
    shards = shards_for(client, as_of)
    for shard in range(shards):  # one version, written shard by shard, published once complete
        client.command(sql, parameters={**params.bound(as_of, taste, shards, shard), "version": version})
    figures = client.query(
        "SELECT countIf(user_id != {nil:UUID}), uniqExactIf(user_id, user_id != {nil:UUID}), uniqExact(post_id), "
        "countIf(user_id = {nil:UUID}), quantiles(0.5, 0.9, 0.99)(score), max(score), "
        "countIf(reason = 'followed'), countIf(reason = 'affinity'), countIf(reason = 'co_engaged'), "
        "countIf(reason = 'taste') "
        "FROM feed_recommendations WHERE version = {v:UInt64}",
        parameters={"v": version, "nil": NIL_USER},
    ).result_rows[0]
    rows, users, posts, trending, q, top, followed, by_affinity, co, by_taste = figures
    client.insert(
        "feed_versions",
        [[version, users, rows, orjson.dumps(asdict(params)).decode()]],
        column_names=["version", "users", "rows", "params"],
    )
    return {
        "version": version,
        "users_covered": int(users),
        "rows": int(rows),
        "distinct_posts": int(posts),
        "trending_rows": int(trending),
        "score_p50": round(float(q[0]), 4) if rows else 0.0,
        "score_p90": round(float(q[1]), 4) if rows else 0.0,
        "score_p99": round(float(q[2]), 4) if rows else 0.0,
        "score_max": round(float(top), 4) if rows else 0.0,
        "reason_followed": int(followed),
        "reason_affinity": int(by_affinity),
        "reason_co_engaged": int(co),
        "reason_taste": int(by_taste),
        "taste_version": taste[0],
        "runtime_s": round(time.perf_counter() - started, 3),
        "shards": shards,
    }


def cleanup(client: Client, keep: int = 2) -> list[int]:
    """Drop partitions of all but the newest `keep` published versions (and of failed recomputes)."""
    published = [r[0] for r in client.query("SELECT version FROM feed_versions ORDER BY version DESC").result_rows]
    keep_set = set(published[:keep])
    newest = published[0] if published else 0
    present = [
        int(r[0])
        for r in client.query(
            "SELECT DISTINCT partition FROM system.parts WHERE database = currentDatabase() "
            "AND table = 'feed_recommendations' AND active"
        ).result_rows
    ]
    dropped = []
    for version in present:
        # a version newer than the newest published one may be a recompute in progress: leave it
        if version in keep_set or version > newest:
            continue
        client.command(f"ALTER TABLE feed_recommendations DROP PARTITION {int(version)}")  # our own integer
        dropped.append(version)
    if published[keep:]:
        client.command("DELETE FROM feed_versions WHERE version < {v:UInt64}", parameters={"v": min(keep_set)})
    return dropped


Lists = list[tuple[str, int, str, str]]  # (user_id, rank, post_id, author_id)


def evaluate(
    client: Client,
    params: ScoringParams,
    split: float,
    horizon_hours: int = 24,
    k: int = 20,
    taste: tuple[int, int] = (0, 0),
    extra: dict[str, Lists] | None = None,
    users: list[str] | None = None,
    sample: int = 1,
) -> dict[str, Any]:
    """Score as of `split` using only data before it; judge the top k by interactions after it.

    `taste` must be a model trained before the split (a later one knows the answer). `extra` adds
    other rankers' lists (an oracle, collaborative filtering); `users` judges only those users, so
    every strategy is judged on the same people; `sample` scores one user in `sample` (by hash).
    """
    table = f"eval_lists_{uuid.uuid4().hex[:12]}"  # our own name, not user input
    client.command(
        f"CREATE TABLE {table} (strategy LowCardinality(String), user_id UUID, rank UInt16, post_id UUID, "
        "author_id UUID) ENGINE = Memory"
    )
    try:
        scoring = query_text("feed_candidates_scored")
        if users is None and sample == 1:  # everyone: in shards, as a recompute scores them
            parts = statements = shards_for(client, split)
        else:  # the judged users (plus trending), or one user in `sample`: one statement
            parts, statements = sample, 1
        for shard in range(statements):
            client.command(
                f"INSERT INTO {table} SELECT if(user_id = {{nil:UUID}}, 'trending', 'model'), user_id, rank, post_id, "
                f"author_id FROM ({scoring})",
                parameters={**params.bound(split, taste, parts, shard, users), "nil": NIL_USER},
            )
        for name, rows in (extra or {}).items():
            client.insert(table, [[name, *row] for row in rows],
                          column_names=["strategy", "user_id", "rank", "post_id", "author_id"])  # fmt: skip
        client.command(
            f"INSERT INTO {table} SELECT 'global_hot', u.user_id, t.rank, t.post_id, t.author_id "
            f"FROM (SELECT DISTINCT user_id FROM {table} WHERE strategy = 'model') AS u "
            f"CROSS JOIN (SELECT * FROM {table} WHERE strategy = 'trending') AS t"
        )
        client.command(
            f"INSERT INTO {table} SELECT 'recency', u.user_id, r.rank, r.post_id, r.author_id "
            f"FROM (SELECT DISTINCT user_id FROM {table} WHERE strategy = 'model') AS u "
            f"CROSS JOIN ({query_text('feed_recency_baseline')}) AS r",
            parameters={"split": int(split), "w": params.window_hours, "k": k},
        )
        catalog = client.query(
            "SELECT uniqExact(post_id) FROM post_metrics_1h WHERE window_start < {split:DateTime('UTC')} "
            "AND window_start >= {split:DateTime('UTC')} - toIntervalHour({w:UInt32})",
            parameters={"split": int(split), "w": params.window_hours},
        ).result_rows[0][0]
        sql = query_text("feed_evaluation").replace("FROM eval_lists", f"FROM {table}")
        result = client.query(
            sql,
            parameters={"split": split, "horizon_hours": horizon_hours, "k": k, "restrict": users is not None,
                        "users": users or []},
        )  # fmt: skip
    finally:
        client.command(f"DROP TABLE IF EXISTS {table}")
    out: dict[str, Any] = {"k": k, "catalog_posts": int(catalog)}
    for row in result.named_results():
        name = row["strategy"]
        if name == "trending":
            continue
        out[name] = {
            "users_evaluated": int(row["users_evaluated"]),
            "hit_rate_at_k": round(float(row["hit_rate_at_k"]), 4),
            "recall_at_k": round(float(row["recall_at_k"]), 4),
            "ndcg_at_k": round(float(row["ndcg_at_k"]), 4),
            "catalog_coverage": round(row["distinct_posts_recommended"] / catalog, 4) if catalog else 0.0,
            "author_diversity": round(float(row["author_diversity"]), 4),
        }
    return out
