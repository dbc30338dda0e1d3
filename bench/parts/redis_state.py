"""What `nova bench platform` reads of its Redis: the users whose feeds are cached, and Redis's own
counters of keys removed."""

from __future__ import annotations

from pathlib import Path

import redis


def read_warmed(env: dict[str, str], users_file: Path) -> int:
    """Point the read load at the users whose feeds are in Redis now (the last warm's, and feeds
    written back since). Done again before each together window, so the load stays the documented
    97% cached users whatever the warms picked since: the warm takes the most active users of the
    last day, and the event generator's users are not the set-up world's."""
    cache = redis.Redis.from_url(env["NOVA_REDIS_URL"])
    try:
        warmed = [k.decode()[6:-1] for k in cache.scan_iter(match="feed:{*}", count=5000) if b"trending" not in k]
    finally:
        cache.close()
    users_file.write_text("\n".join(warmed) + "\n")
    return len(warmed)


def counters(env: dict[str, str]) -> dict[str, int]:
    """Redis's own counters of keys removed: expired, evicted, and UNLINK calls (invalidations)."""
    cache = redis.Redis.from_url(env["NOVA_REDIS_URL"])
    try:
        stats, commands = cache.info("stats"), cache.info("commandstats")
    finally:
        cache.close()
    return {
        "expired": int(stats.get("expired_keys", 0)),
        "evicted": int(stats.get("evicted_keys", 0)),
        "unlink_calls": int(commands.get("cmdstat_unlink", {}).get("calls", 0)),
    }
