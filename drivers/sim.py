"""Simulated field values shared by every protocol's simulator: load curve, noise, counters."""

from __future__ import annotations

import random
import time
from datetime import datetime
from zoneinfo import ZoneInfo

from drivers.config import SimConfig


def load_curve(hour: float) -> float:
    """Daily load in [0, 1] at plant-local `hour`: trough 0 at 04:00, plateau 1 over 10–20.

    Smoothstep ramps (continuous slope) up 04→10 and down 20→04 next day.
    """
    h = hour % 24.0
    if h < 4.0:
        h += 24.0
    if h <= 10.0:
        return _smoothstep((h - 4.0) / 6.0)
    if h <= 20.0:
        return 1.0
    return 1.0 - _smoothstep((h - 20.0) / 8.0)


def _smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


class SimValue:
    """The engineering value of one simulated tag over time (epoch seconds)."""

    def __init__(self, sim: SimConfig, zone: ZoneInfo, rng: random.Random) -> None:
        self.sim = sim
        self._zone = zone
        self._rng = rng
        self._total = sim.counter_start
        self._last_t: float | None = None

    def rate(self, t: float) -> float:
        """The instantaneous value (for a counter: its growth per hour) at `t`."""
        sim = self.sim
        if sim.value is not None:  # a constant stays exact: tests check it to the bit
            return sim.value
        assert sim.min is not None and sim.max is not None
        local = datetime.fromtimestamp(t, self._zone)
        hour = local.hour + local.minute / 60 + local.second / 3600
        noise = self._rng.gauss(0.0, sim.noise) if sim.noise > 0 else 0.0
        return sim.min + (sim.max - sim.min) * load_curve(hour) + noise

    def at(self, t: float | None = None) -> float:
        """Value at `t` (now by default); a counter only ever advances."""
        now = time.time() if t is None else t
        if self._total is None:
            return self.rate(now)
        if self._last_t is not None and now > self._last_t:
            self._total += max(self.rate(now), 0.0) * (now - self._last_t) / 3600.0
        self._last_t = now if self._last_t is None else max(self._last_t, now)
        return self._total
