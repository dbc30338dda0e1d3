"""The world's interactions drawn ahead: a draw costs ~0.2-0.5 ms of numpy however small, so paced
generators take their few events or changes per step from one draw that serves many steps."""

from __future__ import annotations

import numpy as np

from nova_assets.core.world.demo import World

#: a draw serves until used up or this much world time has passed (tastes drift over days, posts
#: appear every few seconds: a second-old draw is still the world's present)
FRESH_S = 1.0


class DrawAhead:
    """`take(n, now_s)`: the next n of the world's interactions at about `now_s`, in draw order."""

    def __init__(self, world: World, size: int, fresh_s: float = FRESH_S) -> None:
        self.world, self.size, self.fresh_s = world, size, fresh_s
        self.drawn: dict[str, np.ndarray] = {}
        self.drawn_at = -float("inf")
        self.next = 0

    def take(self, n: int, now_s: float) -> dict[str, np.ndarray]:
        if self.next + n > len(self.drawn.get("user", ())) or now_s - self.drawn_at >= self.fresh_s:
            self.drawn = self.world.sample(max(self.size, n), now_s)
            self.drawn_at, self.next = now_s, 0
        part = {key: column[self.next : self.next + n] for key, column in self.drawn.items()}
        self.next += n
        return part
