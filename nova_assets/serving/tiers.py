"""The read path's building blocks: a feed as held in memory, a page of it, the bounded TTL map of
L1 and the negative cache, and the coalescer that turns concurrent lookups into one round trip."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson

V = TypeVar("V")
MAX_MISS_BATCH = 500  # users per coalesced ClickHouse query
_POSTS_AT = b',"posts":['


_ID_AT = b'"post_id":"'


def _post_id(post: bytes) -> str | None:
    """The `"post_id":"<36 chars>"` of a post cut out of a feed (None: not in the expected shape)."""
    at = post.find(_ID_AT) if post.startswith(b'"rank":') else -1
    start = at + len(_ID_AT)
    return post[start : start + 36].decode() if at > 0 and post[start + 36 : start + 37] == b'"' else None


@dataclass(frozen=True, slots=True)
class Cached:
    """A feed as kept in L1: each post pre-encoded, so a page is a slice and a join.

    bytes are not tracked by Python's cyclic GC; keeping 10k feeds as dicts would make every
    full collection walk millions of objects and stall the server for hundreds of milliseconds.
    """

    version: int
    posts: tuple[bytes, ...]
    post_ids: tuple[str, ...] = ()  # the posts' ids, in order: what a read checks against deletions

    @classmethod
    def from_raw(cls, raw: bytes) -> Cached:
        """A cached value (`core.cache.warming.feed_value`) as held in L1.

        The posts are ClickHouse's own JSON objects (`feed_posts.sql`: flat, `{"rank":..,"post_id":..`,
        no text of users), cut out of the value as they are instead of parsed and encoded again:
        that cost a Redis hit ~260 µs of CPU for 100 posts (a dict and a `dumps` per post, kept
        alive in L1), cutting ~60 µs. A value of any other shape is parsed in full.
        """
        at = raw.find(_POSTS_AT)
        if at > 0 and raw.endswith(b"}]}"):
            pieces = raw[at + len(_POSTS_AT) + 1 : -3].split(b"},{")
            ids = [i for p in pieces if (i := _post_id(p)) is not None]
            if len(ids) == len(pieces):
                head = orjson.loads(raw[:at] + b"}")
                return cls(int(head.get("version", 0)), tuple([b"{" + p + b"}" for p in pieces]), tuple(ids))
        value = orjson.loads(raw)
        parsed = value.get("posts", ())
        return cls(
            int(value.get("version", 0)),
            tuple(orjson.dumps(p) for p in parsed),
            tuple(str(p.get("post_id", "")) for p in parsed),
        )


@dataclass
class FeedPage:
    user_id: str
    source: str  # l1 | redis | clickhouse | trending | degraded
    version: int
    total: int
    posts_json: tuple[bytes, ...]

    @property
    def posts(self) -> list[dict[str, Any]]:
        return [orjson.loads(p) for p in self.posts_json]

    def to_json(self) -> bytes:
        head = orjson.dumps(
            {"user_id": self.user_id, "source": self.source, "version": self.version, "total": self.total}
        )
        return head[:-1] + b',"posts":[' + b",".join(self.posts_json) + b"]}"


class TtlMap(Generic[V]):
    """Bounded, thread-safe map whose entries expire `ttl_s` after they were put and, with
    `idle_s`, after that long unread; the least recently used go first when full. L1 and the
    negative cache are both one. Hand-written (30 lines): cachetools' caches have no idle expiry."""

    def __init__(self, capacity: int, ttl_s: float, idle_s: float | None = None) -> None:
        self.capacity, self.ttl_s, self.idle_s = capacity, ttl_s, idle_s
        self.items: OrderedDict[str, tuple[V, float, float]] = OrderedDict()  # value, put at, read at
        self.lock = threading.Lock()

    def get(self, key: str) -> V | None:
        found = self.get_aged(key)
        return None if found is None else found[0]

    def get_aged(self, key: str) -> tuple[V, float] | None:
        """The value and how long ago it was put (seconds), or None (absent or expired)."""
        now = time.monotonic()
        with self.lock:
            item = self.items.get(key)
            if item is None:
                return None
            value, created, last = item
            if now - created > self.ttl_s or (self.idle_s is not None and now - last > self.idle_s):
                del self.items[key]
                return None
            self.items[key] = (value, created, now)
            self.items.move_to_end(key)
            return value, now - created

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def put(self, key: str, value: V) -> None:
        now = time.monotonic()
        with self.lock:
            self.items[key] = (value, now, now)
            self.items.move_to_end(key)
            while len(self.items) > self.capacity:
                self.items.popitem(last=False)

    def pop(self, key: str) -> None:
        with self.lock:
            self.items.pop(key, None)

    def clear(self) -> None:
        with self.lock:
            self.items.clear()


Loaded = tuple[Cached, str]
Misses = list[tuple[uuid.UUID, "Future[Loaded | None]"]]


class Coalescer:
    """Coalesces lookups from concurrent requests into one round trip (a DataLoader).

    One thread per tier (Redis, ClickHouse): lookups that arrive while one runs join the next
    batch instead of queueing behind each other, the server's event loop never waits on the
    tier, and the tier sees at most one feed query from this process at a time. A user the
    tier does not have resolves to None.
    """

    def __init__(
        self, load: Callable[[list[uuid.UUID]], dict[str, Loaded]], name: str, max_batch: int = MAX_MISS_BATCH
    ) -> None:
        self.load, self.max_batch = load, max_batch
        self.queue: queue.SimpleQueue[Misses | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def submit(self, users: list[uuid.UUID]) -> list[Future[Loaded | None]]:
        """Futures of the users' feeds; the users of one call are always loaded in the same batch."""
        request: Misses = [(user, Future()) for user in users]
        self.queue.put(request)
        return [future for _, future in request]

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=5)

    def _run(self) -> None:
        while (first := self.queue.get()) is not None:
            batch, stopping = list(first), False
            while len(batch) < self.max_batch:
                try:
                    more = self.queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                batch.extend(more)
            self._load(batch)
            if stopping:
                return

    def _load(self, batch: Misses) -> None:
        users = list(dict.fromkeys(user for user, _ in batch))
        try:
            found: dict[str, Loaded] = {}
            for start in range(0, len(users), self.max_batch):
                found.update(self.load(users[start : start + self.max_batch]))
        except BaseException as exc:  # handed to every waiting request
            for _, future in batch:
                with contextlib.suppress(InvalidStateError):  # cancelled by a caller's time-out
                    future.set_exception(exc)
            return
        for user, future in batch:
            with contextlib.suppress(InvalidStateError):
                future.set_result(found.get(str(user)))
