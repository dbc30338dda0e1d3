"""What a page request may ask: a user id and a page (`limit`, `offset`), checked before any tier."""

from __future__ import annotations

import uuid

MAX_LIMIT = 200


class InvalidRequest(ValueError):
    """A request the caller must fix (HTTP 400)."""


def check_page(limit: int, offset: int) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"limit={limit} must be between 1 and {MAX_LIMIT}")
    if offset < 0:
        raise InvalidRequest(f"offset={offset} must be >= 0")


def parse_user_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        raise InvalidRequest(f"user_id {raw!r} is not a UUID") from None


def fast_page(query: bytes) -> tuple[int, int] | None:
    """`limit` and `offset` of a plain query string (digits only, each at most once, nothing else),
    valid for a page; anything else is None and goes the full way, which explains its 400."""
    limit, offset = 20, 0
    seen: set[bytes] = set()
    for pair in query.split(b"&") if query else ():
        name, eq, value = pair.partition(b"=")
        if not eq or name in seen or not value.isdigit() or len(value) > 6:
            return None
        seen.add(name)
        if name == b"limit":
            limit = int(value)
        elif name == b"offset":
            offset = int(value)
        else:
            return None
    return (limit, offset) if 1 <= limit <= MAX_LIMIT else None
