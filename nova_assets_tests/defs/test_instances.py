"""A sensor tick's Dagster instance is opened once per process, not rebuilt from its ref each tick."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from nova_assets.defs.instances import tick_instance


def _context(ref: dg.InstanceRef | None, instance: dg.DagsterInstance | None = None) -> dg.SensorEvaluationContext:
    return dg.SensorEvaluationContext(
        instance_ref=ref, last_tick_completion_time=None, last_run_key=None, cursor=None, repository_name=None,
        instance=instance,
    )  # fmt: skip


def test_ticks_of_one_instance_share_it(tmp_path: Path) -> None:
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        ref = instance.get_ref()
        first, second = tick_instance(_context(ref)), tick_instance(_context(ref))
        assert first is second and first is not instance  # opened once, from the ref
        run = instance.create_run_for_job(dg.JobDefinition(graph_def=dg.GraphDefinition(name="g"), name="j"))
        assert [r.dagster_run.run_id for r in second.get_run_records()] == [run.run_id]  # the same storage
        (tmp_path / "other").mkdir()
        with dg.instance_for_test(temp_dir=str(tmp_path / "other")) as other:
            assert tick_instance(_context(other.get_ref())) is not first  # another instance: its own
        assert tick_instance(_context(None, instance)) is instance  # a context built around one: that one
