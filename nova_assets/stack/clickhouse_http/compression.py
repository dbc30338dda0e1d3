"""Request and response compression as ClickHouse's HTTP interface does it (Content-Encoding)."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nova_assets.stack.clickhouse_http.errors import BAD_ARGUMENTS, CANNOT_DECOMPRESS, STD_EXCEPTION, ClickHouseError


def _zstd() -> Any:
    """zstd from the standard library (3.14+) or its backport, as clickhouse-connect uses it."""
    try:
        from compression import zstd
    except ImportError:
        from backports import zstd
    return zstd


class _Frames:
    """Decompresses a body of one or more concatenated frames (clients compress block by block).

    A corrupt frame is ClickHouse's CANNOT_DECOMPRESS, never an unhandled error: clickhouse-connect
    sends a deliberately broken frame when its own serialisation fails mid-insert.
    """

    def __init__(self, encoding: str, new: Callable[[], Any]) -> None:
        self.encoding = encoding
        self.new = new
        self.current = new()

    def __call__(self, data: bytes) -> bytes:
        out = bytearray()
        try:
            while data:
                out += self.current.decompress(data)
                if not self.current.eof:
                    break
                data = self.current.unused_data
                self.current = self.new()
        except Exception as exc:  # zlib.error, RuntimeError (lz4), ZstdError: all mean a corrupt body
            raise ClickHouseError(
                CANNOT_DECOMPRESS, f"Cannot decompress the {self.encoding} request body: {exc}", "CANNOT_DECOMPRESS"
            ) from None
        return bytes(out)


def decompressor(encoding: str) -> Callable[[bytes], bytes] | None:
    """An incremental decompressor for a Content-Encoding (None: identity)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip", "deflate"):
        wbits = zlib.MAX_WBITS if encoding == "deflate" else 47
        return _Frames(encoding, lambda: zlib.decompressobj(wbits))
    if encoding == "zstd":
        return _Frames(encoding, _zstd().ZstdDecompressor)
    if encoding == "lz4":
        import lz4.frame

        return _Frames(encoding, lz4.frame.LZ4FrameDecompressor)
    if encoding == "br":
        try:
            import brotli
        except ImportError:
            raise ClickHouseError(STD_EXCEPTION, "Content-Encoding br needs the brotli package on the server") from None
        return brotli.Decompressor().process
    raise ClickHouseError(BAD_ARGUMENTS, f"Unknown Content-Encoding {encoding!r}", "BAD_ARGUMENTS")


@dataclass
class Compressor:
    encoding: str
    compress: Callable[[bytes], bytes]
    flush: Callable[[], bytes]


class _Lz4Frame:
    """An LZ4 frame written incrementally (the frame header goes out with the first bytes)."""

    def __init__(self) -> None:
        import lz4.frame

        self.frame = lz4.frame.LZ4FrameCompressor()
        self.head = self.frame.begin()

    def _take_head(self) -> bytes:
        head, self.head = self.head, b""
        return head

    def compress(self, data: bytes) -> bytes:
        return self._take_head() + self.frame.compress(data)

    def flush(self) -> bytes:
        return self._take_head() + self.frame.flush()


def compressor(accept: str) -> Compressor | None:
    """The first Accept-Encoding the client lists that this server can produce."""
    for item in accept.split(","):
        name = item.split(";")[0].strip().lower()
        if name in ("gzip", "deflate"):
            obj = zlib.compressobj(1, zlib.DEFLATED, 31 if name == "gzip" else zlib.MAX_WBITS)
            return Compressor(name, obj.compress, obj.flush)
        if name == "zstd":
            zobj = _zstd().ZstdCompressor(level=1)
            return Compressor(name, zobj.compress, zobj.flush)
        if name == "lz4":
            framed = _Lz4Frame()
            return Compressor(name, framed.compress, framed.flush)
    return None
