"""SLOs: one declaration, asset checks on a one-minute schedule, freshness policies, alerts.

`defs` is built lazily (definitions.py): the other capabilities import `slo.freshness` while
they are being defined, and the checks import them back.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "defs":
        from nova_assets.defs.slo.definitions import defs

        return defs
    raise AttributeError(name)
