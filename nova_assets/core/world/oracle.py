"""The evaluation's ceiling: the world's own engagement model ranking the posts alive at the split.

A ranker that knows each user's true tastes, every post's quality and how freshness decays can do
no better (in expectation) than rank by the expected engagements over the horizon; the model's
recall as a share of this one's says how much of what is knowable it found.
"""

from __future__ import annotations

import numpy as np

from nova_assets.core.world.demo import World

Lists = list[tuple[str, int, str, str]]  # (user_id, rank, post_id, author_id), as scoring.evaluate takes


def oracle_lists(world: World, users: np.ndarray, split_s: float, horizon_hours: float, k: int,
                 steps: int = 8, chunk: int = 128) -> Lists:  # fmt: skip
    """Each user's top k of the posts published before `split_s` and still alive, by expected
    engagements at `steps` times across the horizon."""
    posts = world.posts_at(split_s)
    alive = np.nonzero(posts.created < split_s)[0]
    times = [split_s + (i + 0.5) * horizon_hours * 3600 / steps for i in range(steps)]
    rows: Lists = []
    for lo in range(0, len(users), chunk):
        group = users[lo : lo + chunk]
        score = world.propensity(group, posts, alive, times)
        top = np.argpartition(-score, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(score, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        for row, user in enumerate(group.tolist()):
            uid = world.user_id(user)
            for rank, j in enumerate(top[row].tolist(), 1):
                p = alive[j]
                rows.append((uid, rank, world.post_id(int(posts.slots[p])), world.user_id(int(posts.author[p]))))
    return rows
