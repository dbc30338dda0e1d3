"""The feed read path: in-process L1 → Redis L2 → ClickHouse → global trending."""

from nova_assets.serving.feed import FeedPage, FeedService
from nova_assets.serving.pages import InvalidRequest

__all__ = ["FeedPage", "FeedService", "InvalidRequest"]
