"""Source assets: the app's Postgres tables and the Kafka topics the platform reads."""

import dagster as dg

from nova_assets.defs.sources.assets import source_specs

defs = dg.Definitions(assets=source_specs)
