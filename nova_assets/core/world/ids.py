"""The world's identifiers and timestamps: stable ids for users and posts (the same in every
process), fresh random ids for events, and the RFC 3339 times the events carry.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import uuid


def stable_uuid(seed: int, kind: str, index: int) -> uuid.UUID:
    """A v4-shaped UUID derived from the seed, the kind of thing and its number."""
    return uuid.UUID(bytes=hashlib.md5(f"nova-world:{seed}:{kind}:{index}".encode()).digest(), version=4)


def random_uuids(n: int) -> list[str]:
    """n random version-4 UUIDs as strings, from one read of the OS's random source.

    `uuid.uuid4()` per event was half of the event generator's own Python time (a syscall and
    an object each); one `os.urandom` read per step and the version bits set by hand give the
    same ids (RFC 9562 §5.4).
    """
    raw = bytearray(os.urandom(16 * n))
    for i in range(n):
        o = 16 * i
        raw[o + 6] = (raw[o + 6] & 0x0F) | 0x40  # version 4
        raw[o + 8] = (raw[o + 8] & 0x3F) | 0x80  # RFC variant
    hexed = raw.hex()
    return [
        f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}" for h in (hexed[32 * i : 32 * i + 32] for i in range(n))
    ]


def iso_ms(ms: int) -> str:
    """RFC 3339 UTC with milliseconds, e.g. 2026-11-27T10:15:30.123Z."""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
