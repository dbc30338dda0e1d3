"""A second world, built unlike the demo one: tastes are latent vectors, not topics.

So that a recommender tuned on the demo world (topics, three per user) cannot pass by knowing
its shape: here users and authors are points in a `dims`-dimensional taste space, and

- **follows** are drawn from those tastes (softmax of `beta * user . author` plus popularity);
- **posts** keep the demo world's clock, authors, quality and freshness (`posts_at`);
- **engagement** is drawn from tastes, quality and freshness together: an event's user looks at
  `look` posts drawn by hotness (quality x author popularity x freshness) and engages with one of
  them by a softmax of `beta * user . author` (+ `follow_bonus` for followed authors), i.e.
  P(post) ~ hotness x exp(beta * user . author); the closer the taste, the likelier a like,
  comment or share instead of a view.

`propensity()` is that model in closed form, for the evaluation's oracle.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from nova_assets.core.world.config import WorldConfig
from nova_assets.core.world.demo import DEVICES, Posts, World, _segments

VIEW_P_BY_TASTE = (0.85, 0.35)  # share of views for the farthest and the closest taste (logistic between)


@dataclass
class LatentWorld(World):
    """Users and authors as taste vectors; same clock, ids and posts as `World`."""

    dims: int = 16
    beta: float = 2.0  # how strongly taste decides (the dot products are ~N(0, 1))
    follow_bonus: float = 1.0  # a followed author's post is e^1 times likelier to be picked
    look: int = 48  # posts a user looks at per event (drawn by hotness)

    def __post_init__(self) -> None:
        c = self.config
        rng = np.random.default_rng([c.seed, 29])
        scale = self.dims**-0.25  # each coordinate N(0, 1/sqrt(d)): a dot product is ~N(0, 1)
        self.user_vec = rng.normal(0.0, scale, size=(c.users, self.dims))
        self.authors = max(1, int(c.users * c.author_share))
        self.author_vec = self.user_vec[: self.authors]  # an author writes what they like
        # one "topic" for the shared post index (the demo world's topics do not exist here)
        self.taste_topics = np.zeros((c.users, 1), dtype=np.int64)
        self.taste_weights = np.ones((c.users, 1))
        self.taste_phase = np.zeros((c.users, 1))
        self.author_topic = np.zeros(self.authors, dtype=np.int64)
        self._populate(rng, stream_salt=31)

    def _follows(self, rng: np.random.Generator) -> None:
        """Each user follows 3 + Poisson authors, drawn by taste and popularity (Gumbel top-k)."""
        c = self.config
        per_user = np.minimum(3 + rng.poisson(max(c.follows_mean - 3, 0), size=c.users), self.authors - 1)
        pairs = []
        log_pop = 0.5 * np.log(self.author_pop)
        for lo in range(0, c.users, 2048):
            hi = min(c.users, lo + 2048)
            keys = (
                self.beta * self.user_vec[lo:hi] @ self.author_vec.T
                + log_pop
                + rng.gumbel(size=(hi - lo, self.authors))
            )
            if lo < self.authors:  # nobody follows themselves
                own = np.arange(lo, min(hi, self.authors))
                keys[own - lo, own] = -np.inf
            order = np.argsort(-keys, axis=1)
            for row in range(hi - lo):
                k = int(per_user[lo + row])
                pairs.append(np.stack([np.full(k, lo + row), order[row, :k]], axis=1))
        stacked = np.concatenate(pairs)
        self.follow_pairs = stacked[np.lexsort((stacked[:, 1], stacked[:, 0]))]
        self.follow_start, self.follow_count = _segments(self.follow_pairs[:, 0], c.users)

    def hotness(self, posts: Posts, now_s: float) -> np.ndarray:
        """The demo world's hotness of each post at `now_s` (the engagement model's prior)."""
        return self.hotness_of(posts.slots, posts.author, posts.created, now_s)

    def sample(self, n: int, now_s: float) -> dict[str, np.ndarray]:
        rng = self._rng
        posts = self.posts_at(now_s)
        if len(posts.slots) == 0:
            raise ValueError(f"no posts in the last {self.config.window_hours} h: nothing to engage")
        cum = np.cumsum(self.hotness(posts, now_s))
        users = np.searchsorted(self.activity_cdf, rng.random(n)).clip(0, self.config.users - 1)
        pos = np.empty(n, dtype=np.int64)
        dots = np.empty(n)
        for lo in range(0, n, 20_000):
            hi = min(n, lo + 20_000)
            u = users[lo:hi]
            seen = np.searchsorted(cum, rng.random((hi - lo, self.look)) * cum[-1]).clip(0, len(cum) - 1)
            authors = posts.author[seen]
            dot = np.einsum("nd,nkd->nk", self.user_vec[u], self.author_vec[authors])
            bonus = self.follow_bonus * self.follows(np.repeat(u, self.look), authors.ravel()).reshape(authors.shape)
            logits = self.beta * dot + bonus + rng.gumbel(size=dot.shape)
            logits[authors == u[:, None]] = -np.inf  # one does not pick one's own post from the feed
            pick = np.argmax(logits, axis=1)
            pos[lo:hi] = seen[np.arange(hi - lo), pick]
            dots[lo:hi] = dot[np.arange(hi - lo), pick]
        author = posts.author[pos]
        view_p = view_share(dots)
        engaged = rng.random(n) >= view_p
        # an engagement is a click, like, comment or share in the demo world's "taste" proportions
        kind = rng.choice(4, size=n, p=np.array([0.15, 0.14, 0.05, 0.04]) / 0.38) + 1
        action = np.where(engaged, kind, 0)
        dwell = rng.gamma(2.0, np.where(action == 0, 2500.0, 6000.0)).astype(np.int64)
        return {
            "user": users,
            "slot": posts.slots[pos],
            "author": author,
            "action": action,
            "mechanism": np.ones(n, dtype=np.int64),
            "dwell_ms": dwell,
            "device": rng.integers(0, len(DEVICES), size=n),
        }

    def propensity(self, users: np.ndarray, posts: Posts, alive: np.ndarray, times: list[float]) -> np.ndarray:
        """Expected engagements (not views) of each user with each post `alive[j]` over `times`,
        up to a per-user factor: hotness share x exp(beta * taste + follow bonus) x engage share."""
        dot = self.user_vec[users] @ self.author_vec[posts.author[alive]].T
        followed = self.follows(np.repeat(users, len(alive)), np.tile(posts.author[alive], len(users)))
        weight = np.exp(self.beta * dot + self.follow_bonus * followed.reshape(dot.shape)) * (1 - view_share(dot))
        heat = np.zeros(len(alive))
        for t in times:
            h = self.hotness(posts, t)[alive]
            heat += h / h.sum()
        out = weight * heat[None, :]
        out[posts.author[alive][None, :] == users[:, None]] = 0.0
        return out


def view_share(dot: np.ndarray) -> np.ndarray:
    """The share of plain views at a taste distance: fans like, comment and share more."""
    far, close = VIEW_P_BY_TASTE
    return far + (close - far) / (1.0 + np.exp(-2.0 * (dot - 0.5)))


def world2_config(base: WorldConfig) -> WorldConfig:
    """The second world's config: the same size and clock as `base`, one (unused) topic."""
    return replace(base, seed=base.seed + 1000, topics=1)
