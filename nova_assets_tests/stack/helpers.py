"""Helpers for the local ClickHouse server's tests: a clickhouse-connect client, a plain HTTP request."""

from __future__ import annotations

import base64
import urllib.error
import urllib.parse
import urllib.request

import clickhouse_connect
from clickhouse_connect.driver.client import Client


def client_for(server: tuple[str, str], database: str, compress: bool | str) -> Client:
    address, password = server
    client = clickhouse_connect.get_client(
        dsn=f"http://default:{password}@{address}", compress=compress, autogenerate_session_id=False
    )
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    client.database = database
    return client


def http(
    server: tuple[str, str],
    params: dict[str, str],
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    auth: bool = True,
) -> tuple[int, dict[str, str], bytes]:
    address, password = server
    request = urllib.request.Request(
        f"http://{address}/?{urllib.parse.urlencode(params)}", data=body, headers=dict(headers or {})
    )
    if auth:
        token = base64.b64encode(f"default:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()
