"""The demo world: reproducible, with the planted preferences the recommender is meant to find."""

from __future__ import annotations

import time

import numpy as np
import orjson

from nova_assets.core.world.demo import ACTIONS, World, WorldConfig

SMALL = WorldConfig(users=2_000, topics=30, post_rate=0.05)


def test_same_seed_same_world_in_every_process() -> None:
    a, b = World(SMALL), World(SMALL)
    assert a.user_ids() == b.user_ids()
    assert np.array_equal(a.follow_pairs, b.follow_pairs)
    now = time.time()
    slots = a.post_slots(now - 3600, now)
    assert len(slots) == round(3600 * SMALL.post_rate) or abs(len(slots) - 3600 * SMALL.post_rate) <= 1
    assert np.array_equal(a.post_author(slots), b.post_author(slots))
    assert [a.post_id(s) for s in slots[:5]] == [b.post_id(s) for s in slots[:5]]
    other = World(WorldConfig(seed=8, users=2_000, topics=30))
    assert other.user_ids()[:3] != a.user_ids()[:3]


def test_follows_follow_tastes() -> None:
    world = World(SMALL)
    followers, followees = world.follow_pairs[:, 0], world.follow_pairs[:, 1]
    assert not np.any(followers == followees)
    in_taste = np.any(world.taste_topics[followers] == world.author_topic[followees][:, None], axis=1)
    # by construction 85% pick an author of one of the user's topics; random pairs would be ~10%
    assert in_taste.mean() > 0.75
    assert 8 <= len(world.follow_pairs) / SMALL.users <= 14


def test_engagement_favours_followed_authors_and_own_topics() -> None:
    world = World(SMALL)
    s = world.sample(100_000, time.time())
    followed = {(int(a), int(b)) for a, b in world.follow_pairs}
    is_followed = np.array([(u, a) in followed for u, a in zip(s["user"].tolist(), s["author"].tolist(), strict=True)])
    post_topic = world.author_topic[s["author"]]
    in_taste = np.any(world.taste_topics[s["user"]] == post_topic[:, None], axis=1)
    # a random author would be followed ~12 / 400 = 3% of the time, in one's topics ~10%
    assert is_followed.mean() > 0.25
    assert in_taste.mean() > 0.6
    engaged = s["action"] != ACTIONS.index("view")
    # fans engage more than passers-by: the non-view share is higher on followed authors' posts
    assert engaged[is_followed].mean() > engaged[~is_followed].mean() + 0.05
    own = s["author"] == s["user"]
    assert not np.any(engaged & own)


def test_tastes_drift_slowly() -> None:
    world = World(SMALL)
    now, users = time.time(), np.arange(SMALL.users)
    base = world.tastes(now, users)
    assert np.allclose(base.sum(axis=1), 1.0)
    hour = np.abs(world.tastes(now + 3600, users) - base).mean()
    half = np.abs(world.tastes(now + SMALL.drift_days * 86_400 / 2, users) - base).mean()
    assert hour < 0.01 < 0.05 < half
    # and the events follow the drift: the share of taste-driven events in each user's first topic
    # moves with that topic's weight
    later = now + SMALL.drift_days * 86_400 / 2
    moved = world.tastes(later, users)[:, 0] - base[:, 0]
    rising, falling = users[moved > 0.1], users[moved < -0.1]

    def first_topic_share(at: float, group: np.ndarray) -> float:
        s = world.sample(300_000, at)
        mine = (s["mechanism"] == 1) & np.isin(s["user"], group)
        return float((world.taste_topics[s["user"][mine], 0] == world.author_topic[s["author"][mine]]).mean())

    assert first_topic_share(later, rising) > first_topic_share(now, rising) + 0.05
    assert first_topic_share(later, falling) < first_topic_share(now, falling) - 0.05


def test_events_are_valid_json_of_the_world() -> None:
    world = World(WorldConfig(users=100))
    events = [orjson.loads(e) for e in world.events(500)]
    users = set(world.user_ids())
    assert all(e["user_id"] in users and e["author_id"] in users for e in events)
    assert {e["action"] for e in events} <= set(ACTIONS)
