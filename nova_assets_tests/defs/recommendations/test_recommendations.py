from __future__ import annotations

import dagster as dg

from nova_assets.core.recommendations.scoring import NIL_USER, ScoringParams, cleanup, latest_version, recompute
from nova_assets.defs.recommendations.assets import feed_recommendations
from nova_assets_tests.world import World


def _feed(world: World, user) -> list[tuple]:  # type: ignore[no-untyped-def]
    return world.ch.query(
        "SELECT rank, post_id, author_id, score, reason FROM feed_recommendations "
        "WHERE version = (SELECT max(version) FROM feed_versions) AND user_id = {u:UUID} ORDER BY rank",
        parameters={"u": user},
    ).result_rows


def test_asset_publishes_ranked_diverse_feeds(world: World) -> None:
    # co-engagement off: on eight users it would swamp the affinity effect checked below (it has its
    # own test on a world big enough for it, test_quality.py)
    config = {
        "feed_size": 10, "per_author": 2, "eval_split_hours_ago": 3.5, "eval_horizon_hours": 24, "eval_k": 5,
        "co_weight": 0.0,
    }  # fmt: skip
    result = dg.materialize(
        [feed_recommendations],
        resources={"clickhouse": world.ch},
        run_config={"ops": {"feed_recommendations": {"config": config}}},
    )
    assert result.success
    meta = {k: v.value for k, v in result.asset_materializations_for_node("feed_recommendations")[0].metadata.items()}
    evaluation = meta["evaluation"]
    assert [c.name for c in evaluation.schema.columns] == [
        "strategy", "users_evaluated", "hit_rate_at_k", "recall_at_k", "ndcg_at_k", "catalog_coverage",
        "author_diversity",
    ]  # fmt: skip
    rows = {r.data["strategy"]: r.data for r in evaluation.records}
    assert list(rows) == ["model", "global_hot", "recency", "model / best baseline"]
    best = max(rows["global_hot"]["recall_at_k"], rows["recency"]["recall_at_k"])
    if best:
        assert rows["model / best baseline"]["recall_at_k"] == round(rows["model"]["recall_at_k"] / best, 3)
    assert meta["eval_model_recall_at_k"] == rows["model"]["recall_at_k"]  # the figure stays numeric too
    sample = meta["sample_feeds"]
    assert [c.name for c in sample.schema.columns] == ["user", "rank", "post", "author", "score", "why"]
    users = {r.data["user"] for r in sample.records}
    assert len(users) == 3 and len(sample.records) == 3 * 10  # every world user's feed has >= 10 posts
    assert {r.data["why"] for r in sample.records} <= {"followed", "co_engaged", "affinity", "hot"}
    assert meta["users_covered"] == len(world.users)  # every user with affinity or follows
    assert meta["trending_rows"] == 10
    for strategy in ("model", "global_hot", "recency"):
        assert 0.0 <= meta[f"eval_{strategy}_hit_rate_at_k"] <= 1.0
        assert f"eval_{strategy}_recall_at_k" in meta and f"eval_{strategy}_author_diversity" in meta

    for user in world.users:
        feed = _feed(world, user)
        assert 0 < len(feed) <= 10
        assert [r[0] for r in feed] == list(range(1, len(feed) + 1))
        assert [r[3] for r in feed] == sorted((r[3] for r in feed), reverse=True)
        per_author: dict = {}
        for _rank, post, author, _score, _reason in feed:
            per_author[author] = per_author.get(author, 0) + 1
            assert post != world.deleted_post
            assert author != user
        assert max(per_author.values()) <= 2

    # user 0's affinity lifts author 3 above hotter authors; user 1 sees the author they follow
    top_authors = [r[2] for r in _feed(world, world.users[0])[:2]]
    assert world.authors[3] in top_authors
    followed = [r for r in _feed(world, world.users[1]) if r[2] == world.authors[5]]
    assert followed and followed[0][4] == "followed"
    # cold-start users have no rows; the global trending list is under the nil user
    assert _feed(world, world.cold_user) == []
    trending = _feed(world, NIL_USER)
    assert len(trending) == 10 and trending[0][2] in world.authors[:2]  # the hottest authors lead
    assert world.deleted_post not in [r[1] for r in trending]


def test_versions_publish_atomically_and_old_ones_are_dropped(world: World) -> None:
    params = ScoringParams(feed_size=5)
    with world.ch.session() as client:
        first = recompute(client, params)["version"]
        assert latest_version(client) == first
        # a recompute in progress (rows written, not yet published) is invisible to readers
        client.command(
            "INSERT INTO feed_recommendations (version, user_id, rank, post_id, author_id, score, reason, computed_at) "
            "SELECT {v:UInt64}, user_id, rank, post_id, author_id, score, reason, computed_at "
            "FROM feed_recommendations WHERE version = {old:UInt64}",
            parameters={"v": first + 10_000_000, "old": first},
        )
        assert latest_version(client) == first
        second = recompute(client, params)["version"]
        third = recompute(client, params)["version"]
        dropped = cleanup(client, keep=2)
        assert first in dropped
        assert latest_version(client) == third
        left = {r[0] for r in client.query("SELECT DISTINCT version FROM feed_recommendations").result_rows}
        assert left == {second, third, first + 10_000_000}  # the unpublished newer one is left alone


def test_a_recompute_in_shards_writes_the_same_feeds(world: World, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # users are scored shard by shard (memory grows with the users of one statement): the rows of
    # every user, and the trending list once, are what one statement writes
    from nova_assets.core.recommendations import scoring

    def rows(client, version: int) -> list[tuple]:  # type: ignore[no-untyped-def]
        return client.query(
            "SELECT user_id, rank, post_id, author_id, round(score, 6), reason FROM feed_recommendations "
            "WHERE version = {v:UInt64} ORDER BY user_id, rank",
            parameters={"v": version},
        ).result_rows

    params = ScoringParams(feed_size=5)
    with world.ch.session() as client:
        whole = recompute(client, params, as_of=world.now.timestamp())
        monkeypatch.setattr(scoring, "USERS_PER_SHARD", 2)
        sharded = recompute(client, params, as_of=world.now.timestamp())
        assert whole["shards"] == 1 and sharded["shards"] > 2
        assert rows(client, sharded["version"]) == rows(client, whole["version"])
        assert sharded["trending_rows"] == whole["trending_rows"] > 0


def test_evaluation_is_carried_forward_until_it_is_due(world: World) -> None:
    """The offline evaluation costs more than the recompute and judges a day-old split: recomputes in
    between carry the last one; a new interval, or other evaluation settings, evaluate again."""
    instance = dg.DagsterInstance.ephemeral()

    def run(**config: object) -> dict:
        result = dg.materialize(
            [feed_recommendations], resources={"clickhouse": world.ch}, instance=instance,
            run_config={"ops": {"feed_recommendations": {"config": {"eval_k": 5, "co_weight": 0.0, **config}}}},
        )  # fmt: skip
        assert result.success
        return {
            k: v.value for k, v in result.asset_materializations_for_node("feed_recommendations")[0].metadata.items()
        }

    first = run()
    carried = run()
    assert carried["version"] > first["version"]  # recomputed ...
    assert carried["evaluated_at"] == first["evaluated_at"]  # ... and the evaluation carried, figures and table
    assert carried["eval_model_recall_at_k"] == first["eval_model_recall_at_k"]
    assert carried["evaluation"] == first["evaluation"] and "k=5" in carried["evaluation_of"]
    assert run(eval_every_minutes=0.0)["evaluated_at"] > first["evaluated_at"]  # due: evaluated again
    other = run(eval_k=10)  # other settings: the carried figures would not be theirs
    assert "eval_k=10" in other["evaluation_of"] and other["evaluated_at"] > first["evaluated_at"]
    assert "evaluation" not in run(evaluate=False, eval_k=10)
