"""A request body read once, decompressed on the way, and drained if the server stops reading it early."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from starlette.requests import ClientDisconnect, Request

DRAIN_LIMIT = 1 << 30  # an unread body beyond this is not worth reading: the connection closes instead


class Body:
    """A request body read once, decompressed on the way, and drained if left half-read."""

    def __init__(self, request: Request, decompress: Callable[[bytes], bytes] | None) -> None:
        self.raw = request.stream()
        self.decompress = decompress

    async def next(self) -> bytes | None:
        chunk = await anext(self.raw, None)
        if chunk is None:
            return None
        return self.decompress(chunk) if self.decompress else chunk

    async def head(self, size: int) -> bytes:
        """The first bytes (at least `size` when the body has them; one chunk when size is 0)."""
        out = bytearray()
        while (chunk := await self.next()) is not None:
            out += chunk
            if len(out) >= size:
                break
        return bytes(out)

    async def rest(self) -> bytes:
        out = bytearray()
        while (chunk := await self.next()) is not None:
            out += chunk
        return bytes(out)

    async def drain(self) -> None:
        read = 0
        with contextlib.suppress(Exception, ClientDisconnect):
            async for chunk in self.raw:
                read += len(chunk)
                if read > DRAIN_LIMIT:
                    break
