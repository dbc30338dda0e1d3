"""`kafka_ingestion_sensor`: compares end offsets with the group's commits and starts a run on lag.

It never polls messages (metadata requests only, a few milliseconds; none while every shard's run
is loading and not yet handing over, except the once-a-minute lag observation), requests at most one run at
a time per shard (plus, shortly before that run's window ends, its successor, which takes over
without a gap: `handover.py`), and fails a run whose heartbeat went stale (its process was killed), so
ingestion resumes by itself: the default run launcher cannot tell Dagster's run monitoring that a
worker died.

Shards (`NOVA_INGEST_SHARDS=N`, default 1): shard k owns the partitions p with p % N == k of every
topic, a stable assignment. Each shard gets its own run, tagged `nova/kafka-loader=kafka-shard-k`
so dagster.yaml's per-value limit lets N loaders run side by side (on N machines with a container
or Kubernetes run launcher) while still never two on the same partitions.
"""

import hashlib
import time

import dagster as dg
import orjson

from nova_assets import settings
from nova_assets.core.ingestion.offsets import PartitionLag, describe_ranges, partition_lags
from nova_assets.defs.ingestion.handover import ENDS_AT_TAG, SHARD_TAG, SUCCESSOR_OF_TAG, handover_due
from nova_assets.defs.ingestion.jobs import HEARTBEAT_TAG, LOADER_TAG, PIPELINE_TAG, RANGES_TAG, kafka_ingestion_job
from nova_assets.defs.instances import tick_instance
from nova_assets.defs.sources.assets import topic_key
from nova_assets.resources.kafka import KafkaResource

SENSOR_INTERVAL = settings.INGEST_SENSOR_INTERVAL
OBSERVE_EVERY_S = 60.0  # a lag observation per topic and minute: a plot, not an event per tick
HEARTBEAT_STALE = settings.INGEST_HEARTBEAT_STALE
RUN_SECONDS = settings.INGEST_RUN_SECONDS
IDLE_EXIT_SECONDS = settings.INGEST_IDLE_EXIT_SECONDS
SHARDS = settings.INGEST_SHARDS
HANDOVER_LEAD = settings.INGEST_HANDOVER_LEAD
HANDOVER_SUFFIX = "-handover"
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def _heartbeat_age(run: dg.DagsterRun, now: float) -> float | None:
    beat = run.tags.get(HEARTBEAT_TAG)
    if not beat:
        return None
    try:
        return now - float(beat.split("@", 1)[0])
    except ValueError:
        return None


def in_flight_runs(context: dg.SensorEvaluationContext, stale_after_s: float) -> list[dg.DagsterRun]:
    """Ingestion runs still alive; a started run silent for `stale_after_s` is marked failed."""
    instance = tick_instance(context)
    records = instance.get_run_records(dg.RunsFilter(job_name=kafka_ingestion_job.name, statuses=IN_FLIGHT), limit=20)
    alive = []
    now = time.time()
    for record in records:
        run = record.dagster_run
        age = _heartbeat_age(run, now)
        if run.status == dg.DagsterRunStatus.STARTED and age is not None and age > stale_after_s:
            instance.report_run_failed(
                run, message=f"ingestion heartbeat is {age:.0f} s old (> {stale_after_s:g} s): the run process died"
            )
            context.log.warning(f"marked run {run.run_id} failed: heartbeat {age:.0f} s old")
            continue
        alive.append(run)
    return alive


@dg.sensor(
    name="kafka_ingestion_sensor",
    job=kafka_ingestion_job,
    minimum_interval_seconds=settings.env_int(SENSOR_INTERVAL, 5, minimum=1, maximum=3600),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Starts a kafka_ingestion run when nova.events or nova.public.* has unconsumed messages.",
)
def kafka_ingestion_sensor(context: dg.SensorEvaluationContext, kafka: KafkaResource) -> dg.SensorResult:
    cursor = orjson.loads(context.cursor) if context.cursor else {"seq": 0}
    stale_after = settings.env_float(HEARTBEAT_STALE, 45.0, minimum=5.0)
    running = in_flight_runs(context, stale_after)
    shards = settings.env_int(SHARDS, 1, minimum=1, maximum=1024)
    lead = settings.env_float(HANDOVER_LEAD, 30.0, minimum=1.0)
    now = time.time()
    by_shard = runs_by_shard(running, shards)
    loading = _loading(by_shard, shards, now, lead)
    if loading and now - float(cursor.get("observed", 0)) < OBSERVE_EVERY_S:
        # every shard has a run that is loading and not yet handing over: whatever the lag, this
        # tick would request nothing, so it asks the broker nothing (a consumer, its metadata,
        # ListOffsets and two OffsetFetches every 5 s were a fixed cost of an idle platform)
        return dg.SensorResult(
            skip_reason=f"{'; '.join(loading)}; lag read once a minute while runs load",
            cursor=orjson.dumps(cursor).decode(),
        )
    consumer = kafka.consumer(**{"socket.timeout.ms": 3000})
    try:
        lags = partition_lags(consumer, timeout_s=3.0, verify_s=0.5)  # ListOffsets alone can hide lag
    finally:
        consumer.close()
    total = sum(p.lag for p in lags)
    seen = {f"{p.topic}:{p.partition}": [p.start, p.high] for p in lags}
    new_cursor = {**cursor, "offsets": seen, "lag": total}
    observations: list[dg.AssetObservation] = []
    if lags and now - float(cursor.get("observed", 0)) >= OBSERVE_EVERY_S:
        observations = lag_observations(lags)
        new_cursor["observed"] = now
    if not lags:
        return dg.SensorResult(
            skip_reason="no nova.events or nova.public.* topics yet", cursor=orjson.dumps(new_cursor).decode()
        )
    if total == 0:
        return dg.SensorResult(
            skip_reason=f"no lag on {len(lags)} partition(s)",
            cursor=orjson.dumps(new_cursor).decode(),
            asset_events=observations,
        )
    requests, waiting = [], []
    seq = int(cursor.get("seq", 0))
    for shard in range(shards):
        mine = [p for p in lags if p.partition % shards == shard]
        lag = sum(p.lag for p in mine)
        if lag == 0:
            continue
        runs = by_shard.get(shard, [])
        successor_of = _handing_over(runs, now, lead)  # its window ends soon: the next run starts up while it loads
        if successor_of is None and runs:
            run = runs[-1]
            waiting.append(f"shard {shard}: lag {lag}, run {run.run_id[:8]} ({run.status.value})")
            continue
        ranges = describe_ranges(mine)
        seq += 1
        fingerprint = hashlib.sha256(ranges.encode()).hexdigest()[:16]
        tags = {PIPELINE_TAG: "ingestion", RANGES_TAG: ranges[:4000], "nova/lag": str(lag)}
        loader = "kafka" if shards == 1 else f"kafka-shard-{shard}"
        if shards > 1:
            tags[SHARD_TAG] = f"{shard}/{shards}"
        if successor_of is not None:
            tags[SUCCESSOR_OF_TAG] = successor_of.run_id
            # the other of two loader tag values, so dagster.yaml's limit of one per value lets the
            # successor start beside its predecessor (the hand-over keeps them from loading at once)
            if successor_of.tags.get(LOADER_TAG, "kafka").endswith(HANDOVER_SUFFIX):
                tags[LOADER_TAG] = loader
            else:
                tags[LOADER_TAG] = loader + HANDOVER_SUFFIX
        else:
            tags[LOADER_TAG] = loader
        requests.append(
            dg.RunRequest(run_key=f"ingest-{seq}-{fingerprint}", run_config=run_config(shard, shards), tags=tags)
        )
    new_cursor["seq"] = seq
    if not requests:
        return dg.SensorResult(
            skip_reason=f"lag {total} messages; " + "; ".join(waiting),
            cursor=orjson.dumps(new_cursor).decode(),
            asset_events=observations,
        )
    return dg.SensorResult(run_requests=requests, cursor=orjson.dumps(new_cursor).decode(), asset_events=observations)


def _loading(by_shard: dict[int, list[dg.DagsterRun]], shards: int, now: float, lead: float) -> list[str]:
    """Each shard's loading run, when every shard has one that is not due to hand over (else [])."""
    loading = []
    for shard in range(shards):
        runs = by_shard.get(shard, [])
        if not runs or _handing_over(runs, now, lead) is not None:
            return []
        run = runs[-1]
        loading.append(f"shard {shard}: run {run.run_id[:8]} ({run.status.value})")
    return loading


def _handing_over(runs: list[dg.DagsterRun], now: float, lead: float) -> dg.DagsterRun | None:
    """A shard's only run, when it is due to hand over to a successor; else None."""
    if len(runs) == 1 and handover_due(runs[0], _ends_at(runs[0]), now, lead):
        return runs[0]
    return None


def _ends_at(run: dg.DagsterRun) -> float:
    try:
        return float(run.tags.get(ENDS_AT_TAG, "inf"))
    except ValueError:
        return float("inf")


def runs_by_shard(running: list[dg.DagsterRun], shards: int) -> dict[int, list[dg.DagsterRun]]:
    """Shard -> its in-flight runs, oldest first. A run of another shard count (or an untagged one
    under shards) may own any partition: while it lives, every shard waits for it."""
    by_shard: dict[int, list[dg.DagsterRun]] = {}
    for run in sorted(running, key=lambda r: r.tags.get(ENDS_AT_TAG, "")):
        tag = run.tags.get(SHARD_TAG, "0/1")
        shard, _, count = tag.partition("/")
        if count != str(shards):
            for k in range(shards):
                by_shard.setdefault(k, []).extend([run, run])  # two: never a hand-over from it
            continue
        by_shard.setdefault(int(shard), []).append(run)
    return by_shard


def run_config(shard: int = 0, shards: int = 1) -> dict:
    """The run window from NOVA_INGEST_RUN_SECONDS / NOVA_INGEST_IDLE_EXIT_SECONDS (launchpad defaults
    otherwise), NOVA_INGEST_PACED, and the run's shard."""
    config = {
        "max_run_seconds": settings.env_float(RUN_SECONDS, 600.0, minimum=5.0),
        "idle_exit_seconds": settings.env_float(IDLE_EXIT_SECONDS, 30.0, minimum=1.0),
        "paced": settings.env_bool(settings.INGEST_PACED, True),
        **({"shard": shard, "shards": shards} if shards > 1 else {}),
    }
    return {"ops": {"ingest_kafka": {"config": config}}}


def lag_observations(lags: list[PartitionLag]) -> list[dg.AssetObservation]:
    """One observation per topic: messages not yet loaded, end offset, committed offset, partitions."""
    by_topic: dict[str, list[PartitionLag]] = {}
    for lag in lags:
        by_topic.setdefault(lag.topic, []).append(lag)
    return [
        dg.AssetObservation(
            asset_key=topic_key(topic),
            metadata={
                "consumer_lag": sum(p.lag for p in parts),
                "end_offset": sum(p.high for p in parts),
                "committed_offset": sum(max(p.committed, 0) for p in parts),
                "partitions": len(parts),
            },
        )
        for topic, parts in sorted(by_topic.items())
    ]
