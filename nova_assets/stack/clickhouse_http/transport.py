"""uvicorn's httptools protocol, taking request URIs as long as ClickHouse does.

httptools splits the request target with http-parser's `parse_url`, whose offsets are 16-bit: a
target over 65,535 bytes is refused as `Invalid HTTP request received` (400). ClickHouse accepts
URIs up to `http_max_uri_size` (1 MiB), and clients send bound parameters in the URL (an `IN` list
of a few thousand ids is ~100 KB). A longer target is split here instead: the path goes through
uvicorn as usual, the query string is set on the request's scope before its app runs.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

PARSE_URL_LIMIT = 65_535
MAX_URI_SIZE = 1 << 20  # ClickHouse's http_max_uri_size


class LongUriProtocol(HttpToolsProtocol):
    def on_url(self, url: bytes) -> None:
        if len(self.url) + len(url) > MAX_URI_SIZE:
            # llhttp stops on a callback's exception: the request is answered 400 and closed
            raise ValueError(f"the request URI is longer than http_max_uri_size ({MAX_URI_SIZE})")
        super().on_url(url)

    def on_headers_complete(self) -> None:
        if len(self.url) <= PARSE_URL_LIMIT:
            super().on_headers_complete()
            return
        path, _, query = self.url.partition(b"?")
        self.url = path.partition(b"#")[0]
        super().on_headers_complete()  # builds the scope and queues the app, which has not run yet
        self.scope["query_string"] = query.partition(b"#")[0]
