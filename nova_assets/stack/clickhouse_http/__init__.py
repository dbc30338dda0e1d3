"""ClickHouse's HTTP interface over chDB: what the local ClickHouse server speaks.

Split along its seams: `protocol` reads a request, `body` its body, `requests` the small pieces of
one request's handling, `engine` holds the chDB connections (pool and sessions), `compression`
the bodies' encodings, `native` the protocol-versioned Native output, `stats` the request mix,
`app` the handlers that tie them together, `errors` ClickHouse's codes and HTTP statuses.
"""

from nova_assets.stack.clickhouse_http.app import Server, build_app
from nova_assets.stack.clickhouse_http.errors import ClickHouseError

__all__ = ["ClickHouseError", "Server", "build_app"]
