"""The demo world: one seeded generative model of a social feed that every generator draws from.

Planted preferences a real feed has, so a recommender has something to find:

- **Tastes.** Each user likes three topics (weights drawn per user; popular topics are liked by
  more users) and the weights drift slowly (a sinusoid per user and topic, period `drift_days`).
- **Authors and follows.** A share of the users write; each author writes in their own first
  topic, and popular authors write more. Users follow authors they like: mostly authors of their
  topics, popularity-weighted, a few globally popular ones. `nova generate app` writes exactly
  these follows to Postgres, so the app's follows agree with the events.
- **Posts on a world clock.** Post number `s` is published at `s / post_rate` seconds after the
  epoch, its id, author and quality derived from the seed and `s` alone. Every process (the event
  generator, the app generator, a benchmark) agrees on which posts exist at any time without
  talking to each other.
- **Engagement.** An event is driven by a followed author's recent post (`p_follow`), a hot post
  of one of the user's topics, i.e. similar to what they engage with (`p_taste`), or a globally
  hot post (the rest). Fans like, comment and share more; hot posts from outside one's tastes are
  mostly only viewed.

Everything is vectorised with numpy; the same sampler writes the live stream (`events`) and a
history of millions of events for the benchmark (`history`).
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field

import numpy as np
import orjson

from nova_assets.core.world.config import WorldConfig
from nova_assets.core.world.ids import iso_ms, random_uuids, stable_uuid
from nova_assets.errors import ConfigError
from nova_assets.settings import DEMO_WORLD, env_str

ACTIONS = ("view", "click", "like", "comment", "share")
DEVICES = ("ios", "android", "web")
# action mix by what brought the post: a fan engages, a passer-by mostly views
ACTION_P = {
    "follow": (0.50, 0.16, 0.20, 0.07, 0.07),
    "taste": (0.62, 0.15, 0.14, 0.05, 0.04),
    "hot": (0.76, 0.12, 0.08, 0.02, 0.02),
}
MECHANISMS = ("follow", "taste", "hot")


@functools.cache
def _zeta(a: float) -> float:
    """Sum of k^-a over k >= 1 (a Zipf rank's normaliser), for the closed-form propensity."""
    return float(np.sum(np.arange(1, 1_000_001, dtype=np.float64) ** -a)) + 1_000_000 ** (1 - a) / (a - 1)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _hash(x: np.ndarray, salt: int) -> np.ndarray:
    """splitmix64 of (x, salt): a counter-based random stream, the same in every process."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) * _GOLDEN + np.uint64(salt) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _uniform(x: np.ndarray, salt: int) -> np.ndarray:
    return (_hash(x, salt) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _segments(keys: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and length of each key's run in an array sorted by key."""
    starts = np.searchsorted(keys, np.arange(size), side="left")
    ends = np.searchsorted(keys, np.arange(size), side="right")
    return starts, ends - starts


def _zipf_rank(rng: np.random.Generator, a: float, count: np.ndarray) -> np.ndarray:
    """A Zipf(a) rank below each count (rank 0 most likely)."""
    return np.minimum(rng.zipf(a, size=len(count)) - 1, np.maximum(count - 1, 0))


@dataclass
class Posts:
    """The posts alive in a window of the world clock, indexed for sampling."""

    slots: np.ndarray  # post numbers, ascending
    author: np.ndarray  # author (user index) per post
    topic: np.ndarray
    created: np.ndarray  # seconds since the epoch
    hot_order: np.ndarray  # post positions, hottest first
    by_topic: np.ndarray  # positions sorted by (topic, hottest first)
    topic_start: np.ndarray
    topic_count: np.ndarray
    by_author: np.ndarray  # positions sorted by (author, newest first)
    author_start: np.ndarray
    author_count: np.ndarray


@dataclass
class World:
    """Users, tastes, authors and follows of one seed; posts and events come from the clock."""

    config: WorldConfig = field(default_factory=WorldConfig)
    stream: int = 0  # independent random streams for parallel writers of the same world

    def __post_init__(self) -> None:
        c = self.config
        rng = np.random.default_rng(c.seed)
        n, t = c.users, c.topics
        self.authors = max(1, int(n * c.author_share))
        topic_pop = 1.0 / np.arange(1, t + 1) ** 0.7
        # three distinct topics per user, popular topics more often (Gumbel top-k)
        keys = np.log(topic_pop)[None, :] + rng.gumbel(size=(n, t))
        k = min(3, t)
        top = np.argpartition(-keys, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1)
        self.taste_topics = np.take_along_axis(top, order, axis=1)
        self.taste_weights = np.sort(rng.dirichlet([4.0, 2.0, 1.0][:k], size=n), axis=1)[:, ::-1]
        self.taste_phase = rng.uniform(0, 2 * math.pi, size=(n, k))
        # users 0..authors-1 write, in their first topic; popularity is Zipf over a random order
        self.author_topic = self.taste_topics[: self.authors, 0]
        self._populate(rng, stream_salt=1)

    def _populate(self, rng: np.random.Generator, stream_salt: int) -> None:
        """What every world shares once its tastes are drawn: author popularity (Zipf over a random
        order), user activity, the follows (`_follows`, per world), and the event stream's state."""
        self.author_pop = 1.0 / (rng.permutation(self.authors) + 1.0) ** 0.9
        self.author_cdf = np.cumsum(self.author_pop**0.8) / np.sum(self.author_pop**0.8)
        activity = rng.lognormal(0.0, 1.0, size=self.config.users)
        self.activity_cdf = np.cumsum(activity) / activity.sum()
        self._follows(rng)
        self._user_ids: list[str | None] = [None] * self.config.users  # made on first use (an md5 each)
        self._post_ids: dict[int, str] = {}
        self._rng = np.random.default_rng([self.config.seed, stream_salt, self.stream])
        self._posts: Posts | None = None
        self._posts_at = -1.0

    # -- the social graph -------------------------------------------------------------------------

    def _follows(self, rng: np.random.Generator) -> None:
        c = self.config
        by_topic = np.argsort(self.author_topic, kind="stable")
        sorted_topics = self.author_topic[by_topic]
        starts, counts = _segments(sorted_topics, c.topics)
        # per-topic cumulative popularity, offset by the topic number: one searchsorted samples all
        pop = self.author_pop[by_topic]
        cum = np.zeros(len(pop))
        for topic in np.nonzero(counts)[0]:
            s, e = starts[topic], starts[topic] + counts[topic]
            cum[s:e] = topic + np.cumsum(pop[s:e]) / pop[s:e].sum()
        per_user = 3 + rng.poisson(c.follows_mean - 3, size=c.users)
        follower = np.repeat(np.arange(c.users), per_user)
        m = len(follower)
        u = rng.random(m)
        cumw = np.cumsum(self.taste_weights[follower], axis=1)
        pick = (u[:, None] > cumw).sum(axis=1).clip(0, cumw.shape[1] - 1)
        topic = self.taste_topics[follower, pick]
        in_taste = (rng.random(m) < c.follow_in_taste) & (counts[topic] > 0)
        followee = np.searchsorted(self.author_cdf, rng.random(m)).clip(0, self.authors - 1)
        pos = np.searchsorted(cum, topic[in_taste] + rng.random(in_taste.sum()) * 0.999999)
        followee[in_taste] = by_topic[np.minimum(pos, len(by_topic) - 1)]
        keep = followee != follower
        pairs = np.unique(np.stack([follower[keep], followee[keep]], axis=1), axis=0)
        self.follow_pairs = pairs  # (follower, followee) user indices, sorted
        self.follow_start, self.follow_count = _segments(pairs[:, 0], c.users)

    def follows(self, users: np.ndarray, authors: np.ndarray) -> np.ndarray:
        """Whether each (user, author) pair is a follow."""
        codes = users.astype(np.int64) * self.authors + authors
        return np.isin(codes, self.follow_pairs[:, 0] * self.authors + self.follow_pairs[:, 1])

    def user_id(self, i: int) -> str:
        known = self._user_ids[i]
        if known is None:
            known = self._user_ids[i] = str(stable_uuid(self.config.seed, "user", int(i)))
        return known

    def post_id(self, slot: int) -> str:
        known = self._post_ids.get(slot)
        if known is None:
            if len(self._post_ids) > 2_000_000:
                self._post_ids.clear()
            known = self._post_ids[slot] = str(stable_uuid(self.config.seed, "post", int(slot)))
        return known

    def user_ids(self) -> list[str]:
        return [self.user_id(i) for i in range(self.config.users)]

    # -- posts on the world clock -----------------------------------------------------------------

    def post_slots(self, start_s: float, end_s: float) -> np.ndarray:
        """Numbers of the posts published in [start_s, end_s)."""
        rate = self.config.post_rate
        return np.arange(math.ceil(start_s * rate), math.ceil(end_s * rate), dtype=np.int64)

    def post_author(self, slots: np.ndarray) -> np.ndarray:
        u = _uniform(slots, self.config.seed * 7 + 1)
        return np.searchsorted(self.author_cdf, u).clip(0, self.authors - 1)

    def hotness_of(self, slots: np.ndarray, author: np.ndarray, created: np.ndarray, now_s: float) -> np.ndarray:
        """Quality (lognormal, from the seed and the slot) x sqrt(author popularity) / (age + 2)^1.5."""
        quality = np.exp(1.2 * np.sqrt(-2 * np.log(_uniform(slots, self.config.seed * 7 + 4) + 1e-12)) * 0.5)
        age_h = np.maximum(now_s - created, 0) / 3600.0
        return quality * np.sqrt(self.author_pop[author]) / (age_h + 2.0) ** 1.5

    def posts_at(self, now_s: float) -> Posts:
        """The posts of the last `window_hours`, indexed (cached for a minute of world time)."""
        if self._posts is not None and abs(now_s - self._posts_at) < 60:
            return self._posts
        c = self.config
        slots = self.post_slots(now_s - c.window_hours * 3600, now_s)
        author = self.post_author(slots)
        topic = np.where(
            _uniform(slots, c.seed * 7 + 2) < 0.9,
            self.author_topic[author],
            (_uniform(slots, c.seed * 7 + 3) * c.topics).astype(np.int64),
        )
        created = slots / c.post_rate
        hotness = self.hotness_of(slots, author, created, now_s)
        hot_order = np.argsort(-hotness, kind="stable")
        by_topic = np.lexsort((-hotness, topic))
        topic_start, topic_count = _segments(topic[by_topic], c.topics)
        by_author = np.lexsort((-created, author))
        author_start, author_count = _segments(author[by_author], self.authors)
        self._posts = Posts(
            slots, author, topic, created, hot_order, by_topic, topic_start, topic_count,
            by_author, author_start, author_count,
        )  # fmt: skip
        self._posts_at = now_s
        return self._posts

    # -- engagement --------------------------------------------------------------------------------

    def tastes(self, now_s: float, users: np.ndarray) -> np.ndarray:
        """The users' weights over their three topics at `now_s` (each row sums to 1; drifts slowly)."""
        phase = 2 * math.pi * now_s / (self.config.drift_days * 86400)
        w = self.taste_weights[users] * (1 + 0.6 * np.sin(phase + self.taste_phase[users]))
        return w / w.sum(axis=1, keepdims=True)

    def sample(self, n: int, now_s: float) -> dict[str, np.ndarray]:
        """n interactions happening at `now_s`: user, post slot, author, action, mechanism, dwell."""
        c, rng = self.config, self._rng
        posts = self.posts_at(now_s)
        if len(posts.slots) == 0:
            raise ValueError(f"no posts in the last {c.window_hours} h at post_rate={c.post_rate}: nothing to engage")
        users = np.searchsorted(self.activity_cdf, rng.random(n)).clip(0, c.users - 1)
        roll = rng.random(n)
        mech = np.where(roll < c.p_follow, 0, np.where(roll < c.p_follow + c.p_taste, 1, 2))
        pos = np.full(n, -1, dtype=np.int64)

        # a followed author's recent post (newest most likely)
        f = np.nonzero((mech == 0) & (self.follow_count[users] > 0))[0]
        if len(f):
            fu = users[f]
            followee = self.follow_pairs[
                self.follow_start[fu] + (rng.random(len(f)) * self.follow_count[fu]).astype(np.int64), 1
            ]
            count = posts.author_count[followee]
            ok = count > 0
            rank = np.minimum(rng.geometric(0.3, size=ok.sum()) - 1, count[ok] - 1)
            pos[f[ok]] = posts.by_author[posts.author_start[followee[ok]] + rank]
        mech[(mech == 0) & (pos < 0)] = 1

        # a hot post of one of the user's (drifting) topics
        t = np.nonzero(mech == 1)[0]
        if len(t):
            tu = users[t]
            cumw = np.cumsum(self.tastes(now_s, tu), axis=1)
            pick = (rng.random(len(t))[:, None] * cumw[:, -1:] > cumw).sum(axis=1).clip(0, cumw.shape[1] - 1)
            topic = self.taste_topics[tu, pick]
            count = posts.topic_count[topic]
            ok = count > 0
            rank = _zipf_rank(rng, 1.35, count[ok])
            pos[t[ok]] = posts.by_topic[posts.topic_start[topic[ok]] + rank]
        mech[(mech == 1) & (pos < 0)] = 2

        # globally hot
        h = np.nonzero(mech == 2)[0]
        pos[h] = posts.hot_order[_zipf_rank(rng, 1.25, np.full(len(h), len(posts.slots)))]

        author = posts.author[pos]
        action = np.empty(n, dtype=np.int64)
        for m, name in enumerate(MECHANISMS):
            idx = np.nonzero(mech == m)[0]
            action[idx] = rng.choice(len(ACTIONS), size=len(idx), p=ACTION_P[name])
        action[author == users] = 0  # one's own post: only a view
        dwell = rng.gamma(2.0, np.where(action == 0, 2500.0, 6000.0)).astype(np.int64)
        return {
            "user": users,
            "slot": posts.slots[pos],
            "author": author,
            "action": action,
            "mechanism": mech,
            "dwell_ms": dwell,
            "device": rng.integers(0, len(DEVICES), size=n),
        }

    def propensity(self, users: np.ndarray, posts: Posts, alive: np.ndarray, times: list[float]) -> np.ndarray:
        """Expected engagements (not views) of each user with each post `alive[j]` of `posts`, summed
        over `times`, up to a per-user factor: `sample()`'s three mechanisms in closed form."""
        c = self.config
        slots, author, topic = posts.slots[alive], posts.author[alive], posts.topic[alive]
        engage = {m: 1.0 - ACTION_P[m][0] for m in MECHANISMS}
        followed = self.follows(np.repeat(users, len(alive)), np.tile(author, len(users))).reshape(len(users), -1)
        per_follow = followed / np.maximum(self.follow_count[users], 1)[:, None]
        out = np.zeros((len(users), len(alive)))
        for t in times:
            now = self.posts_at(t)
            idx = np.searchsorted(now.slots, slots).clip(0, max(len(now.slots) - 1, 0))
            present = (now.slots[idx] == slots) if len(now.slots) else np.zeros(len(slots), bool)
            hot_rank, topic_rank, author_rank = (np.empty(len(now.slots), np.int64) for _ in range(3))
            hot_rank[now.hot_order] = np.arange(len(now.slots))
            topic_rank[now.by_topic] = np.arange(len(now.slots))
            author_rank[now.by_author] = np.arange(len(now.slots))
            # ranks of the posts at t (a post gone from the window contributes nothing)
            r_hot = np.where(present, hot_rank[idx], 0)
            r_topic = np.where(present, topic_rank[idx] - now.topic_start[topic], 0)
            r_author = np.where(present, author_rank[idx] - now.author_start[author], 0)
            p_hot = (r_hot + 1.0) ** -1.25 / _zeta(1.25)
            p_topic = (r_topic + 1.0) ** -1.35 / _zeta(1.35)
            p_author = 0.3 * 0.7 ** r_author.astype(np.float64)
            tastes = self.tastes(t, users)
            in_taste = np.zeros((len(users), len(alive)))
            for j in range(tastes.shape[1]):
                in_taste += tastes[:, j : j + 1] * (self.taste_topics[users, j][:, None] == topic[None, :])
            term = (
                c.p_follow * engage["follow"] * per_follow * p_author[None, :]
                + c.p_taste * engage["taste"] * in_taste * p_topic[None, :]
                + (1 - c.p_follow - c.p_taste) * engage["hot"] * p_hot[None, :]
            )
            out += term * present[None, :]
        out[author[None, :] == users[:, None]] = 0.0
        return out

    def events(self, n: int, now_ms: int | None = None) -> list[bytes]:
        """n JSON events for nova.events, all happening now."""
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        return self.format_events(self.sample(n, now_ms / 1000.0), now_ms)

    def format_events(self, s: dict[str, np.ndarray], now_ms: int) -> list[bytes]:
        """The JSON events of drawn interactions (`sample`), happening at `now_ms` (a paced generator
        draws ahead and formats at each send, so an event's time is when it is sent)."""
        n = len(s["user"])
        when = iso_ms(now_ms)
        dumps = orjson.dumps
        columns = zip(
            random_uuids(n), s["user"].tolist(), s["slot"].tolist(), s["author"].tolist(), s["action"].tolist(),
            s["dwell_ms"].tolist(), s["device"].tolist(), strict=True,
        )  # fmt: skip
        return [
            dumps(
                {
                    "event_id": e,
                    "user_id": self.user_id(u),
                    "post_id": self.post_id(p),
                    "author_id": self.user_id(a),
                    "event_time": when,
                    "action": ACTIONS[k],
                    "dwell_ms": d,
                    "device": DEVICES[v],
                    "app_ver": "5.2.0",
                }
            )
            for e, u, p, a, k, d, v in columns
        ]

    def history(self, start_s: float, end_s: float, n: int, step_s: float = 1800.0) -> dict[str, np.ndarray]:
        """n events spread evenly over [start_s, end_s), sampled in steps of `step_s` of world time."""
        steps = max(1, math.ceil((end_s - start_s) / step_s))
        parts: list[dict[str, np.ndarray]] = []
        for i in range(steps):
            lo = start_s + i * step_s
            hi = min(end_s, lo + step_s)
            k = n * (i + 1) // steps - n * i // steps
            if k <= 0:
                continue
            part = self.sample(k, lo)
            part["time_ms"] = ((lo + self._rng.random(k) * (hi - lo)) * 1000).astype(np.int64)
            parts.append(part)
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def from_env() -> World | None:
    """The demo world named by NOVA_DEMO_WORLD ("seed:users", set by `nova dev`), None when unset."""
    raw = env_str(DEMO_WORLD)
    if not raw:
        return None
    try:
        seed, users = (int(x) for x in raw.split(":"))
    except ValueError:
        raise ConfigError(DEMO_WORLD, raw, 'is not "seed:users", e.g. "7:5000"') from None
    return World(WorldConfig(seed=seed, users=users))
