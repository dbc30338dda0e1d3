"""The second world: tastes are vectors, and follows, engagement and the oracle follow them."""

from __future__ import annotations

import numpy as np

from nova_assets.core.world.config import WorldConfig
from nova_assets.core.world.demo import World
from nova_assets.core.world.latent import LatentWorld, world2_config
from nova_assets.core.world.oracle import oracle_lists

CONFIG = world2_config(WorldConfig(users=1_000, post_rate=4_000 / (48 * 3600)))
NOW = 1_800_000_000.0


def test_the_same_seed_is_the_same_world() -> None:
    a, b = LatentWorld(CONFIG), LatentWorld(CONFIG)
    assert np.array_equal(a.user_vec, b.user_vec) and np.array_equal(a.follow_pairs, b.follow_pairs)
    assert a.user_ids() == b.user_ids()
    assert not np.array_equal(a.user_vec, LatentWorld(world2_config(WorldConfig(users=1_000, seed=8))).user_vec)


def test_follows_and_engagement_are_drawn_from_the_tastes() -> None:
    world = LatentWorld(CONFIG)
    rng = np.random.default_rng(0)
    f, a = world.follow_pairs[:, 0], world.follow_pairs[:, 1]
    followed = np.einsum("nd,nd->n", world.user_vec[f], world.author_vec[a]).mean()
    random_pairs = np.einsum(
        "nd,nd->n",
        world.user_vec[rng.integers(0, 1_000, 5_000)],
        world.author_vec[rng.integers(0, world.authors, 5_000)],
    ).mean()
    assert followed > random_pairs + 0.5, (followed, random_pairs)
    assert not (f == a).any()
    s = world.sample(20_000, NOW)
    dots = np.einsum("nd,nd->n", world.user_vec[s["user"]], world.author_vec[s["author"]])
    engaged, viewed = dots[s["action"] > 0].mean(), dots[s["action"] == 0].mean()
    assert dots.mean() > random_pairs + 0.5 and engaged > viewed, (dots.mean(), engaged, viewed)


def _oracle_recall(world: World) -> tuple[float, float]:
    """Recall@20 of the oracle and of ranking by hotness alone, on truth sampled from the world."""
    split = NOW - 12 * 3600
    hist = world.history(split, NOW, 60_000)
    engaged = hist["action"] > 0
    truth: dict[int, set[int]] = {}
    for u, slot in zip(hist["user"][engaged].tolist(), hist["slot"][engaged].tolist(), strict=True):
        truth.setdefault(u, set()).add(slot)
    users = np.array(sorted(truth)[:300])
    lists = oracle_lists(world, users, split, 12, 20)
    ids = {world.post_id(int(s)): int(s) for s in world.posts_at(split).slots}
    by_user: dict[str, set[int]] = {}
    for user, _rank, post, _author in lists:
        by_user.setdefault(user, set()).add(ids[post])
    oracle = np.mean([len(by_user[world.user_id(u)] & truth[u]) / len(truth[u]) for u in users])
    posts = world.posts_at(split)
    alive = posts.created < split
    order = [p for p in posts.hot_order if alive[p]][:20]
    hot = {int(posts.slots[p]) for p in order}
    popular = np.mean([len(hot & truth[u]) / len(truth[u]) for u in users])
    return float(oracle), float(popular)


def test_the_oracle_knows_more_than_popularity_in_both_worlds() -> None:
    for world in (World(WorldConfig(users=1_000, topics=20, post_rate=4_000 / (48 * 3600))), LatentWorld(CONFIG)):
        oracle, popular = _oracle_recall(world)
        assert oracle > 2 * popular, (type(world).__name__, oracle, popular)
