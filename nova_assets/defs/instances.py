"""The Dagster instance a sensor tick reads, opened once per code server process.

`context.instance` of a tick served by a code server is rebuilt from the tick's instance ref every
time: storage objects, and on SQLite alembic's migration scripts loaded and checked, ~30 ms of CPU
(measured: `DagsterInstance.from_ref` of `nova dev`'s instance). At a tick every 5 s that is a fixed
cost of the idle platform; the instance is the same one every tick, so it is kept.
"""

from __future__ import annotations

import threading

import dagster as dg

_OPEN: dict[str, dg.DagsterInstance] = {}
_LOCK = threading.Lock()


def tick_instance(context: dg.SensorEvaluationContext) -> dg.DagsterInstance:
    """The tick's instance: the one this process opened for the same ref, else the context's own."""
    ref = context.instance_ref
    if ref is None:  # a context built around an instance (tests, `build_sensor_context`)
        return context.instance
    key = dg.serialize_value(ref)
    with _LOCK:
        instance = _OPEN.get(key)
        if instance is None:
            instance = _OPEN[key] = dg.DagsterInstance.from_ref(ref)
    return instance
