"""The `nova` command: local stack, SQL shell, Dagster dev server, generators and benchmarks."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import click

from nova_assets import settings
from nova_assets.errors import NovaError
from nova_assets.generate.world_config import WorldConfig

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

    url = os.environ.get(settings.CLICKHOUSE_URL)
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
    """Start the stack, create the ClickHouse schema, send demo traffic and run `dagster dev` on 127.0.0.1."""
    from nova_assets.stack import Stack

    local = Stack()
    _run(lambda: local.up())
    env = {**os.environ, **local.env()}
    _run(lambda: _apply_schema(env[settings.CLICKHOUSE_URL]))
    dagster_home = local.home / "dagster"
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    env["DAGSTER_HOME"] = str(dagster_home)
    cmd = [
        sys.executable, "-m", "dagster", "dev",
        "-w", str(REPO_ROOT / "workspace.yaml"),
        "-h", "127.0.0.1", "-p", str(port),
    ]  # fmt: skip
    click.echo(f"starting Dagster on http://127.0.0.1:{port} ...")
    # its own process group: on Ctrl-C nova dev stops Dagster and everything it started (webserver,
    # daemon, code server, runs) within a bounded time, instead of waiting on its graceful shutdown
    proc = subprocess.Popen(cmd, env=env, cwd=dagster_home, start_new_session=True)
    children: list[subprocess.Popen[bytes]] = []

    def interrupted(*_args: object) -> None:
        raise KeyboardInterrupt

    # explicit handlers: a SIGINT ignored by the parent (a background job) would be ignored here too
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    try:
        # Traffic starts once Dagster is up: events sent while it boots would wait for the first
        # ingestion run, and that backlog would fill the SLO checks' 5-minute window.
        _wait_for_dagster(port, proc)
        if traffic > 0:
            log = open(local.home / "demo-traffic.log", "ab")  # noqa: SIM115 - lives as long as the children

            def generate(kind: str, rate: float, *extra: str) -> subprocess.Popen[bytes]:
                """`nova generate <kind>` for a year (until `nova dev` stops), into the demo log."""
                args = ["generate", kind, "--rate", str(rate), "--duration", "31536000", *extra]
                return subprocess.Popen(
                    [sys.executable, "-m", "nova_assets.cli", *args], env=env, stdout=log, stderr=subprocess.STDOUT
                )

            children.append(generate("events", traffic, "--malformed", "0.002"))
            if "cdc" in local.services:  # app changes in Postgres, flowing through Debezium
                children.append(generate("app", max(1.0, traffic / 10)))
            # the read path, with light reads: the hit-rate and feed-latency checks measure real ones
            children.append(
                subprocess.Popen(
                    [sys.executable, "-m", "nova_assets.cli", "serve", "--port", str(serve_port)],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            children.append(generate("reads", max(1.0, traffic / 10), "--port", str(serve_port)))
            changes = f"{max(1.0, traffic / 10):g} app changes/s, " if "cdc" in local.services else ""
            click.echo(
                f"demo traffic: {traffic:g} events/s to nova.events, {changes}"
                f"{max(1.0, traffic / 10):g} feed reads/s on http://127.0.0.1:{serve_port} "
                f"(log: {local.home / 'demo-traffic.log'})"
            )
        # the first feeds once events are in, so recommendations cover real users from the start
        click.echo(f"Dagster is up on http://127.0.0.1:{port}; waiting for the first events to be loaded ...")
        try:
            first_feeds(env, wait_for_events_s=90 if traffic > 0 else 0)
        except NovaError as exc:  # the schedules will try again; the demo goes on
            click.echo(f"warning: {exc}", err=True)
        click.echo(f"Dagster UI: http://127.0.0.1:{port}  (Ctrl-C stops Dagster; `nova stack down` stops the stack)")
        code = proc.wait()
    except KeyboardInterrupt:
        click.echo("stopping Dagster and the demo traffic (the stack keeps running: `nova stack down`)")
        code = 130
    finally:
        for child in children:
            child.terminate()
        _stop_group(proc, grace_s=4.0)
        for child in children:
            try:
                child.wait(2)
            except subprocess.TimeoutExpired:
                child.kill()
    sys.exit(code)


def _stop_group(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGINT to a process group (graceful), SIGTERM after `grace_s`, SIGKILL 2 s later; leaves nothing."""
    import contextlib

    for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            continue
        # the leader is gone; its children (webserver, daemon, runs) may not be
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        return


def _wait_for_dagster(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 180.0) -> None:
    """Until the Dagster webserver answers (its daemon starts beside it), or `dagster dev` exits."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
                return
        except OSError:
            time.sleep(1)


def first_feeds(env: dict[str, str], wait_for_events_s: float = 0.0) -> None:
    """Materialize the ClickHouse schema assets, feed_recommendations and feed_cache once, as a Dagster
    run the UI shows, so the demo starts complete (feeds to read, checks that measure something)
    instead of waiting for the schedules. With `wait_for_events_s`, first wait for events to arrive."""
    import time

    import dagster as dg

    os.environ.update(env)
    from nova_assets.definitions import defs
    from nova_assets.defs.schema.assets import GROUP
    from nova_assets.resources.clickhouse import ClickHouseResource

    if wait_for_events_s > 0:
        clickhouse = ClickHouseResource.from_env(env[settings.CLICKHOUSE_URL])
        deadline = time.monotonic() + wait_for_events_s
        while time.monotonic() < deadline:
            if clickhouse.query("SELECT count() FROM events").result_rows[0][0] > 0:
                break
            time.sleep(1)
    click.echo("materializing the schema assets, feed_recommendations and feed_cache once (schedules take over)")
    graph = defs.resolve_asset_graph()
    keys = [
        k for k in graph.get_all_asset_keys() if graph.get(k).group_name == GROUP and graph.get(k).is_materializable
    ]
    keys += [dg.AssetKey("feed_recommendations"), dg.AssetKey("feed_cache")]
    job = defs.resolve_implicit_global_asset_job_def()
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        result = job.execute_in_process(instance=instance, asset_selection=keys, raise_on_error=False)
    if not result.success:
        raise NovaError("the first schema / feed_recommendations / feed_cache run failed: see it in the Dagster UI")


def _apply_schema(url: str) -> None:
    """Create what is missing in ClickHouse (idempotent), so sensors and schedules find their tables."""
    from nova_assets.defs.schema.ddl import apply_all
    from nova_assets.defs.schema.sql_files import Renderer
    from nova_assets.resources.clickhouse import ClickHouseResource

    clickhouse = ClickHouseResource.from_env(url)
    with clickhouse.ddl_session() as client:
        applied = apply_all(client, Renderer(clickhouse.database, clickhouse.cluster))
        created = [name for name, result in applied.items() if result.created]
    click.echo(f"ClickHouse schema: {len(created)} object(s) created" if created else "ClickHouse schema: up to date")


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
    from nova_assets.generate.events import produce_events
    from nova_assets.generate.world import World, WorldConfig
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
@WORLD_SEED
@WORLD_USERS
def generate_app(rate: float, duration: float, seed: int, users: int) -> None:
    """Write the demo world's users, follows and posts, then likes, comments, follows, edits and deletes."""
    from nova_assets.generate.app import generate as generate_changes
    from nova_assets.resources import PostgresResource

    postgres = PostgresResource(dsn=_env(settings.POSTGRES_DSN))
    _run(lambda: click.echo(generate_changes(postgres, rate=rate, duration_s=duration, users=users, seed=seed)))


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
    value = os.environ.get(name)
    if value:
        return value
    from nova_assets.stack import Stack

    return Stack().env()[name]


def _feed_service(listen_invalidations: bool = True) -> object:
    from nova_assets.resources import ClickHouseResource, RedisResource
    from nova_assets.serving import FeedService

    clickhouse = ClickHouseResource.from_env(_env(settings.CLICKHOUSE_URL))
    redis_client = RedisResource(
        url=_env(settings.REDIS_URL), cluster=settings.env_bool(settings.REDIS_CLUSTER)
    ).client()
    return FeedService(clickhouse, redis_client, listen_invalidations=listen_invalidations)


@main.command("feed")
@click.argument("user_id")
@click.option("--limit", default=20, show_default=True)
@click.option("--offset", default=0, show_default=True)
def feed(user_id: str, limit: int, offset: int) -> None:
    """Print a user's feed page as JSON (L1 → Redis → ClickHouse → trending)."""
    from nova_assets.serving import InvalidRequest

    service = _feed_service(listen_invalidations=False)  # one read: nothing to keep fresh
    try:
        page = service.get_feed(user_id, limit=limit, offset=offset)  # type: ignore[attr-defined]
    except InvalidRequest as exc:
        raise click.BadParameter(str(exc)) from None
    finally:
        service.close()  # type: ignore[attr-defined]
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
    server = make_server(service, port, host=host, limits=limits)  # type: ignore[arg-type]
    click.echo(f"serving http://{host}:{port}/feed/<user_id> and /metrics (Ctrl-C stops)")
    try:
        server.serve_forever()  # uvicorn: SIGINT and SIGTERM stop it gracefully
    except KeyboardInterrupt:
        pass
    finally:
        service.close()  # type: ignore[attr-defined]


@main.command("cdc")
def cdc() -> None:
    """Run Debezium (Postgres → Kafka nova.public.<table>) in the foreground; state under NOVA_HOME/cdc."""
    import logging

    from nova_assets.defs.cdc.runner import run
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
def bench(name: str, as_json: bool, shards: int | None) -> None:
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
    _run(lambda: module.run(as_json=as_json))


def _run(action: object) -> None:
    try:
        action()  # type: ignore[operator]
    except NovaError as exc:
        raise click.ClickException(str(exc)) from None


if __name__ == "__main__":
    main()
