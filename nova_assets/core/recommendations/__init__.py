"""recommendations: the Dagster-free part (see nova_assets.core)."""
