"""How `nova bench platform --find-capacity` judges one together window against the issue's targets."""

from __future__ import annotations

from typing import Any

from bench.parts.cpu import platform_cores

SHORT = 0.95  # the least share of the asked app changes a rung must have written to count


def misses(together: dict[str, Any]) -> str:
    """Which SLO targets a together window missed ('' when all held): the issue's capacity criteria."""
    e, c, h = together["e2v"]["p95"], together["cdc"]["p95"], together["reads"]["hit"]["p95"]
    misses = [
        f"e2v P95 {e:.2f} s > 1" if not e <= 1.0 else "",  # NaN (nothing measured) is a miss too
        f"CDC lag P95 {c:.2f} s > 2" if not c <= 2.0 else "",
        f"hit P95 {h:.1f} ms > 10" if not h <= 10.0 else "",
        f"{together['failed']} failed checks ({', '.join(together['failed_names'])})" if together["failed"] else "",
        f"{together['reads']['errors']} read errors" if together["reads"]["errors"] else "",
        f"{together['reads']['timeouts']} read time-outs" if together["reads"]["timeouts"] else "",
        f"failed runs {', '.join(together['failed_runs'])}" if together["failed_runs"] else "",
        _short(together),
    ]
    return "; ".join(m for m in misses if m)


def _short(together: dict[str, Any]) -> str:
    """A rung whose app writers fell behind was lighter than its name: not a hold."""
    asked, written = together.get("changes_asked_per_s", 0), together.get("changes_written_per_s", 0.0)
    if asked and written < SHORT * asked:
        return f"app changes written {written:.0f}/s < {SHORT:.0%} of {asked}/s asked (the load generator fell behind)"
    return ""


def keys(name: str, q: dict[str, float], unit: str, which: tuple[str, ...] = ("p50", "p95", "p99")) -> dict:
    """JSON keys such as e2v_p95_s or hit_p99_ms for the quantiles of one figure."""
    return {f"{name}_{k}_{unit}": round(q[k], 3 if unit == "s" else 2) for k in which}


def probe_keys(together: dict[str, Any]) -> dict[str, Any]:
    """One rung's figures in `capacity_probes`: the same keys and rounding as the summary's."""
    return {
        **keys("e2v", together["e2v"], "s", ("p95",)),
        **keys("cdc_lag", together["cdc"], "s", ("p95",)),
        **keys("hit", together["reads"]["hit"], "ms", ("p95",)),
        **{
            k: v
            for tier, q in together["reads"].get("hit_by_source", {}).items()
            for k, v in keys(f"hit_{tier}", q, "ms", ("p50", "p95", "p99")).items()
        },
        "changes_carried_per_s": together.get("changes_per_s", 0.0),  # published by Debezium
        "changes_written_per_s": together.get("changes_written_per_s", 0.0),  # by the app writers
        "failed_checks": together["failed"],
        "failed_check_details": together.get("failed_check_details", []),
        "platform_cpu_cores": platform_cores(together["cpu"]),
        "read_hit_share": hit_share(together["reads"]),
        "read_sources": together["reads"].get("sources", {}),
        "warmed_users": together.get("warmed_users", 0),  # the users read (97%), from Redis at the rung's start
        # reads `nova serve` sent past Redis to ClickHouse (Redis slower than its wait, or failing)
        "redis_skipped": together["reads"].get("redis_skipped", {}),
        "redis_removed": together.get("redis_removed", {}),
    }


def hit_share(reads: dict[str, Any]) -> float:
    """The share of reads the client saw answered from a cache (what `cache_hit_rate` judges)."""
    hits, misses = reads["hit"]["n"], reads["miss"]["n"]
    return round(hits / (hits + misses), 4) if hits + misses else float("nan")


def probe_line(p: dict[str, Any]) -> str:
    return (
        f"e2v P95 {p['e2v_p95_s']:.2f} s, CDC lag P95 {p['cdc_lag_p95_s']:.2f} s, hit P95 {p['hit_p95_ms']:.1f} ms, "
        f"platform {p['platform_cpu_cores']:.2f} cores"
    )
