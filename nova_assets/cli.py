"""The `nova` command: local stack, SQL shell, Dagster dev server, generators and benchmarks."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from nova_assets import settings
from nova_assets.errors import NovaError

if TYPE_CHECKING:
    from nova_assets.serving import FeedService
from nova_assets.core.world.config import WorldConfig

REPO_ROOT = Path(__file__).resolve().parent.parent


def _only(values: tuple[str, ...]) -> list[str] | None:
    return list(values) or None


@click.group()
def main() -> None:
    """Nova feed data platform."""


@main.group()
def stack() -> None:
    """Local services: ClickHouse server (chDB), Tansu (Kafka), valkey (Redis), Postgres, Debezium."""


@stack.command("up")
@click.option("--only", "only", multiple=True, help="Act on one service (clickhouse, kafka, redis, postgres, cdc).")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for each service.")
def stack_up(only: tuple[str, ...], timeout: float) -> None:
    """Start what is not running (idempotent) and wait until it answers."""
    from nova_assets.stack import Stack

    _run(lambda: Stack().up(_only(only), timeout_s=timeout))


@stack.command("down")
@click.option("--only", "only", multiple=True, help="Act on one service.")
@click.option(
    "--no-drain",
    is_flag=True,
    help="Stop a memory-only Kafka without first loading what it holds into ClickHouse (those messages are lost).",
)
def stack_down(only: tuple[str, ...], no_drain: bool) -> None:
    """Stop the stack's services (state under NOVA_HOME is kept; a memory-only Kafka is drained first)."""
    from nova_assets.stack import Stack

    _run(lambda: Stack().down(_only(only), drain=not no_drain))


@stack.command("status")
def stack_status() -> None:
    """Show each service: pid, address, health. Exit 1 when any is down."""
    from nova_assets.stack import Stack

    rows = Stack().status()
    for row in rows:
        state = "healthy" if row.healthy else ("unhealthy" if row.running else "down")
        extra = f"  ({row.detail})" if row.detail and not row.healthy else ""
        click.echo(f"{row.name:<10} {state:<10} pid={row.pid or '-':<8} {row.address}{extra}")
    sys.exit(0 if all(r.healthy for r in rows) else 1)


@stack.command("env")
def stack_env() -> None:
    """Print `export NOVA_*=...` lines for the stack: eval "$(nova stack env)"."""
    import shlex

    from nova_assets.stack import Stack

    for name, value in Stack().env().items():
        click.echo(f"export {name}={shlex.quote(value)}")


@main.command("sql")
@click.argument("query")
def sql(query: str) -> None:
    """Run a query on ClickHouse and print the server's formatting."""
    from nova_assets.resources.clickhouse import ClickHouseResource

    url = settings.env_str(settings.CLICKHOUSE_URL)
    if not url:
        from nova_assets.stack import Stack

        url = Stack().env()[settings.CLICKHOUSE_URL]
    resource = ClickHouseResource.from_env(url)
    try:
        out = resource.raw(query)
    except NovaError as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:  # the server's message, as clickhouse-client would print it
        click.echo(str(exc), err=True)
        sys.exit(2)
    sys.stdout.buffer.write(out)
    sys.stdout.flush()


@main.command("dev")
@click.option("--port", default=3000, show_default=True, help="Dagster UI port on 127.0.0.1.")
@click.option("--traffic", default=200.0, show_default=True, help="Demo events per second (0: none).")
@click.option("--serve-port", default=8080, show_default=True, help="Port of `nova serve` (demo reads) on 127.0.0.1.")
def dev(port: int, traffic: float, serve_port: int) -> None:
    """Start the stack, create the ClickHouse schema, send demo traffic and run `dagster dev` on 127.0.0.1;
    a service or process that dies is restarted (NOVA_HOME/supervisor.log)."""
    from nova_assets import dev as dev_loop

    code = 0

    def go() -> None:
        nonlocal code
        code = dev_loop.run(port, traffic, serve_port, echo=click.echo)

    _run(go)
    sys.exit(code)


@main.group()
def generate() -> None:
    """Demo traffic: events to Kafka (and, with CDC, app changes to Postgres)."""


WORLD_SEED = click.option(
    "--seed", default=WorldConfig.seed, show_default=True, help="Seed of the demo world (same for events and app)."
)
WORLD_USERS = click.option(
    "--users", default=WorldConfig.users, show_default=True, help="Users of the demo world (same for events and app)."
)


@generate.command("events")
@click.option("--rate", default=1000.0, show_default=True, help="Events per second (0 = as fast as possible).")
@click.option("--duration", default=60.0, show_default=True, help="Seconds to run.")
@click.option("--malformed", default=0.0, show_default=True, help="Share of malformed messages (0..1).")
@click.option("--partitions", default=1, show_default=True, help="Partitions when the topic is created.")
@WORLD_SEED
@WORLD_USERS
def generate_events(rate: float, duration: float, malformed: float, partitions: int, seed: int, users: int) -> None:
    """Produce the demo world's events (tastes, follows, hot posts; skewed actions) to nova.events."""
    from nova_assets.core.world.demo import World, WorldConfig
    from nova_assets.generate.events import produce_events
    from nova_assets.resources.kafka import KafkaResource

    if not 0.0 <= malformed <= 1.0:
        raise click.BadParameter(f"--malformed={malformed} must be between 0 and 1")
    kafka = KafkaResource(bootstrap_servers=_env(settings.KAFKA_BOOTSTRAP))
    world = World(WorldConfig(seed=seed, users=users))
    _run(
        lambda: click.echo(
            produce_events(
                kafka, rate=rate, duration_s=duration, malformed_share=malformed, partitions=partitions, world=world
            )
        )
    )


@generate.command("app")
@click.option("--rate", default=100.0, show_default=True, help="Changes per second.")
@click.option("--duration", default=60.0, show_default=True, help="Seconds to run.")
@click.option(
    "--changes-only", is_flag=True, help="Skip the world's users, follows and posts (written by an earlier run)."
)
@click.option(
    "--writer",
    default=0,
    show_default=True,
    help="This writer's index among parallel ones (each its own changes; 0 also publishes the posts).",
)
@WORLD_SEED
@WORLD_USERS
def generate_app(rate: float, duration: float, changes_only: bool, writer: int, seed: int, users: int) -> None:
    """Write the demo world's users, follows and posts, then likes, comments, follows, edits and deletes."""
    from nova_assets.generate.app import generate as generate_changes
    from nova_assets.resources import PostgresResource

    postgres = PostgresResource(dsn=_env(settings.POSTGRES_DSN))
    _run(
        lambda: click.echo(
            generate_changes(
                postgres,
                rate=rate,
                duration_s=duration,
                users=users,
                seed=seed,
                writer_index=writer,
                seed_world=not changes_only and writer == 0,
            )
        )
    )


@generate.command("reads")
@click.option("--rate", default=20.0, show_default=True, help="Feed requests per second.")
@click.option("--duration", default=60.0, show_default=True, help="Seconds to run.")
@click.option("--port", default=8080, show_default=True, help="Port of `nova serve` on 127.0.0.1.")
@click.option("--cold", default=0.05, show_default=True, help="Share of requests for unknown users.")
def generate_reads(rate: float, duration: float, port: int, cold: float) -> None:
    """Request feeds from `nova serve` for recently active users (and a few unknown ones)."""
    from nova_assets.generate.reads import read_feeds
    from nova_assets.resources.clickhouse import ClickHouseResource

    clickhouse = ClickHouseResource.from_env(_env(settings.CLICKHOUSE_URL))
    _run(lambda: click.echo(read_feeds(clickhouse, port, rate, duration, cold_share=cold)))


def _env(name: str) -> str:
    """A NOVA_* setting from the environment, else from the local stack."""
    value = settings.env_str(name)
    if value:
        return value
    from nova_assets.stack import Stack

    return Stack().env()[name]


def _feed_service(follow_deletions: bool = True) -> FeedService:
    from nova_assets.resources import ClickHouseResource, RedisResource
    from nova_assets.serving import FeedService

    clickhouse = ClickHouseResource.from_env(_env(settings.CLICKHOUSE_URL))
    redis_resource = RedisResource(url=_env(settings.REDIS_URL), cluster=settings.env_bool(settings.REDIS_CLUSTER))
    return FeedService(
        clickhouse,
        redis_resource.client(),
        follow_deletions=follow_deletions,
        async_redis=redis_resource.async_client,
    )


@main.command("feed")
@click.argument("user_id")
@click.option("--limit", default=20, show_default=True)
@click.option("--offset", default=0, show_default=True)
def feed(user_id: str, limit: int, offset: int) -> None:
    """Print a user's feed page as JSON (L1 → Redis → ClickHouse → trending)."""
    from nova_assets.serving import InvalidRequest

    service = _feed_service(follow_deletions=False)  # one read: the deletes are read once, before it
    try:
        page = service.get_feed(user_id, limit=limit, offset=offset)
    except InvalidRequest as exc:
        raise click.BadParameter(str(exc)) from None
    finally:
        service.close()
    click.echo(page.to_json().decode())


@main.command("serve")
@click.option("--port", default=8080, show_default=True, help="Port on 127.0.0.1.")
@click.option("--max-connections", default=1024, show_default=True, help="Open connections; more get 503.")
@click.option("--head-timeout", default=5.0, show_default=True, help="Seconds for a client to send a request head.")
@click.option("--keep-alive", default=5.0, show_default=True, help="Seconds an idle keep-alive connection stays.")
@click.option(
    "--host", default="127.0.0.1", show_default=True,
    help="Address to listen on; 0.0.0.0 only inside a container whose port is published on 127.0.0.1.",
)  # fmt: skip
def serve(port: int, max_connections: int, head_timeout: float, keep_alive: float, host: str) -> None:
    """Serve GET /feed/{user_id}?limit&offset and GET /metrics (on 127.0.0.1 unless --host)."""
    from nova_assets.serving.http import Limits, make_server

    service = _feed_service()
    limits = Limits(max_connections=max_connections, head_timeout_s=head_timeout, keep_alive_s=keep_alive)
    server = make_server(service, port, host=host, limits=limits)
    click.echo(f"serving http://{host}:{port}/feed/<user_id> and /metrics (Ctrl-C stops)")
    try:
        server.serve_forever()  # uvicorn: SIGINT and SIGTERM stop it gracefully
    except KeyboardInterrupt:
        pass
    finally:
        service.close()


@main.command("cdc")
def cdc() -> None:
    """Run Debezium (Postgres → Kafka nova.public.<table>) in the foreground; state under NOVA_HOME/cdc."""
    import logging

    from nova_assets.core.cdc.runner import run
    from nova_assets.resources import KafkaResource, PostgresResource

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    postgres = PostgresResource(dsn=_env(settings.POSTGRES_DSN))
    kafka = KafkaResource(bootstrap_servers=_env(settings.KAFKA_BOOTSTRAP))
    _run(lambda: run(postgres, kafka, settings.nova_home() / "cdc"))
    # The engine has stopped and flushed its offsets; leftover non-daemon JVM threads would keep
    # the interpreter from exiting, so leave now.
    logging.shutdown()
    sys.stdout.flush()
    os._exit(0)


@main.command("bench")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object as the last line.")
@click.option(
    "--shards", type=click.IntRange(2, 64), default=None,
    help="ingest only: N parallel loaders (NOVA_INGEST_SHARDS) against one, in the same run.",
)  # fmt: skip
@click.option(
    "--find-capacity", is_flag=True,
    help="platform only: the largest fraction of the guide's load at which every SLO target holds together.",
)  # fmt: skip
def bench(name: str, as_json: bool, shards: int | None, find_capacity: bool) -> None:
    """Run benchmark NAME from bench/ (schema, ...), printing its figures."""
    import importlib

    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    available = sorted(p.stem for p in (REPO_ROOT / "bench").glob("*.py") if p.stem not in ("__init__", "common"))
    if name not in available:
        raise click.ClickException(f"unknown benchmark {name!r}; choose from {', '.join(available)}")
    module = importlib.import_module(f"bench.{name}")
    if shards is not None:
        if not hasattr(module, "run_shards"):
            raise click.ClickException(f"--shards applies to `nova bench ingest`, not {name!r}")
        _run(lambda: module.run_shards(shards, as_json=as_json))
        return
    if find_capacity:
        if name != "platform":
            raise click.ClickException(f"--find-capacity applies to `nova bench platform`, not {name!r}")
        _run(lambda: module.run(as_json=as_json, find_capacity=True))
        return
    _run(lambda: module.run(as_json=as_json))


def _run(action: Callable[[], object]) -> None:
    try:
        action()
    except NovaError as exc:
        raise click.ClickException(str(exc)) from None


if __name__ == "__main__":
    main()
