"""SLOs: one declaration, asset checks on a one-minute schedule, freshness policies, alerts."""

from nova_assets.defs.slo.definitions import defs

__all__ = ["defs"]
