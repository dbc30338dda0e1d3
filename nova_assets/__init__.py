"""nova-assets: the Dagster project that runs the data side of the Nova social feed."""

__version__ = "0.1.0"
