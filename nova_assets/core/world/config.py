"""The demo world's size and planted preferences, apart from the model (world.py): the `nova`
command reads its defaults for its options without importing numpy at every start."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorldConfig:
    """Size and planted preferences of the world (the defaults are the `make dev` demo)."""

    seed: int = 7
    users: int = 5_000
    topics: int = 40
    author_share: float = 0.2  # share of users who write
    post_rate: float = 0.05  # posts per second on the world clock (180 an hour)
    window_hours: float = 48.0  # posts older than this are no longer engaged with
    follows_mean: float = 12.0  # authors followed per user (3 + Poisson)
    follow_in_taste: float = 0.85  # share of follows inside the user's topics
    p_follow: float = 0.30
    p_taste: float = 0.40  # the rest is globally hot
    drift_days: float = 7.0

    def __post_init__(self) -> None:
        for name in ("users", "topics", "post_rate", "window_hours"):
            if getattr(self, name) <= 0:
                raise ValueError(f"WorldConfig.{name}={getattr(self, name)!r} must be > 0")
        if not 0 <= self.p_follow + self.p_taste <= 1:
            raise ValueError(f"WorldConfig.p_follow + p_taste = {self.p_follow + self.p_taste} must be within [0, 1]")
