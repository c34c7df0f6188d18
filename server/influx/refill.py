"""The historian's stored minutes as the minute cycle made them, to refill the outbox.

After a kill -9 the lines that waited in memory for the outbox are gone, but the
historian stored those minutes with the raw samples they were calculated from. This
recalculates them from their raw windows, as `carbonscada recalc` does (the same
numbers as stored), with running totals seeded from the minutes stored before them as
the runtime seeds its own at start, for InfluxSink to re-send.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime

from compute.cycle import MinuteCycle, padded
from compute.plan import CalculationPlan
from compute.totals import Totals
from model.records import MinuteResult, SiteMinute
from server.historian import Historian, StoredMinute

_CHUNK_MINUTES = 240  # minutes read from the historian at a time
NAN = math.nan

# Seeds `totals` with the sums of the minutes stored before the datetime.
Seeder = Callable[[Totals, datetime], Awaitable[None]]


class HistorianMinutes:
    """Stored minutes of one site, recalculated from their raw windows."""

    def __init__(self, historian: Historian, plan: CalculationPlan, seed: Seeder) -> None:
        self.historian = historian
        self.plan = plan
        self.seed = seed
        self.not_recalculated = 0  # minutes re-sent from their rows only (no totals)

    async def latest_minute(self) -> datetime | None:
        """Start of the last stored minute; None when none is stored."""
        bounds = await self.historian.minute_bounds()
        return None if bounds is None else bounds[1]

    async def minutes_after(self, after: datetime | None) -> AsyncIterator[MinuteResult]:
        """The stored minutes later than `after` (all if None), oldest first."""
        cycle: MinuteCycle | None = None
        while True:
            chunk = await self.historian.stored_minutes(after, _CHUNK_MINUTES)
            if not chunk:
                return
            if cycle is None:
                cycle = MinuteCycle(self.plan)
                await self.seed(cycle.totals, chunk[0].t)
            # The kernels of up to _CHUNK_MINUTES minutes: off the event loop, as the
            # live minute cycle's are.
            for result in await asyncio.to_thread(self._results, chunk, cycle):
                yield result
            after = chunk[-1].t

    def _results(self, chunk: list[StoredMinute], cycle: MinuteCycle) -> list[MinuteResult]:
        return [self._result(m, cycle) for m in chunk]

    def _result(self, m: StoredMinute, cycle: MinuteCycle) -> MinuteResult:
        raw = m.raw
        if raw is not None and raw.tags == tuple(cycle.calc.tag_ids):
            return cycle.run(m.t, padded(raw))
        # Calculated with another configuration: the stored rows as they are, the running
        # totals (which this configuration cannot continue) left out.
        self.not_recalculated += 1
        return MinuteResult(
            t=m.t,
            sources=tuple(dataclasses.replace(s, co2_hour_t=NAN, co2_today_t=NAN,
                                              co2_ytd_t=NAN) for s in m.sources),
            units=tuple(dataclasses.replace(u, co2_today_t=NAN, output_today_mwh=NAN,
                                            intensity_today_t_mwh=NAN, co2_ytd_t=NAN)
                        for u in m.units),
            site=SiteMinute(m.t, math.fsum(u.co2_kg for u in m.units
                                           if not math.isnan(u.co2_kg)),
                            NAN, NAN, NAN, NAN, NAN),
            raw=raw)
