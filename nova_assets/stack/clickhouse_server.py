"""The local ClickHouse server: one process owns the chDB directory and serves ClickHouse's HTTP interface.

chDB allows one process per data directory, while Dagster's webserver, daemon, runs, `nova serve`
and `nova cdc` are separate processes. Instead of handing one embedded engine around between
them, this process opens a bounded pool of chDB connections (they run queries concurrently and
release the GIL) and every other part talks to it with clickhouse-connect over HTTP, exactly as
to a production server. HTTP is Starlette on uvicorn; the SQL engine is chDB.

It answers any HTTP client as ClickHouse does (`nova_assets.stack.clickhouse_http`): `/ping`,
GET and POST `/?query=`, the query in the body, `[WITH ...] INSERT ... FORMAT X` with its data
in the body (any input format, streamed into chDB), binary-safe queries and `param_*` bindings,
settings as URL parameters, sessions (`session_id`, `session_timeout`, `session_check`) with
their temporary tables, `SET` and `USE`, external data (multipart files), compressed bodies and
responses, `wait_end_of_query`, `client_protocol_version` for Native, the `X-ClickHouse-*`
headers, and errors with their code, header and status, in-band once a result has started.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import orjson

from nova_assets.core.clickhouse_files import SERVER_FILE, password_for
from nova_assets.stack.clickhouse_http import ClickHouseError, Server, build_app
from nova_assets.stack.clickhouse_http.transport import LongUriProtocol

__all__ = ["ClickHouseError", "Server", "build_app", "main"]

log = logging.getLogger("nova.clickhouse")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--path", required=True, type=Path, help="chDB data directory this process owns")
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--pool", type=int, default=8, help="chDB connections (concurrent queries)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    import uvicorn

    directory = args.path.resolve()
    server = Server(directory, password_for(directory), args.pool)
    info = {"url": f"http://{args.host}:{args.port}", "pid": os.getpid(), "pool": args.pool}
    (directory / SERVER_FILE).write_bytes(orjson.dumps(info))
    log.info("ClickHouse HTTP on %s over chDB at %s (%d connections)", info["url"], directory, args.pool)
    try:  # uvicorn stops gracefully on SIGTERM and SIGINT
        uvicorn.run(
            build_app(server),
            host=args.host,
            port=args.port,
            log_level="warning",
            access_log=False,
            timeout_keep_alive=60,
            http=LongUriProtocol,
            lifespan="on",
        )
    except KeyboardInterrupt:
        pass
    finally:
        (directory / SERVER_FILE).unlink(missing_ok=True)
        server.engine.close()


if __name__ == "__main__":
    main()
