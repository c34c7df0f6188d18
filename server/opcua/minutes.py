"""A minute's source results into the address space straight from its columns.

With 16 700 sources (100k tags) a minute is some 150 000 variable values. Built from
per-source records on the event loop (a record, a Variant with its type checks and a
NodeId lookup per value) that held the loop for over a second a minute
(bench/test_whole_path.py's watchdog: sink.py dv, writer.py slot). Here the slots of
every source's variables are resolved once per source order, the values are read from
the minute's column arrays, the statuses come from a table per flag, the flag variables
share one DataValue per flag, and the loop is given back every _CHUNK sources.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from asyncua import ua

from model.flags import DataFlag
from model.records import SourceColumns
from server.opcua.layout import (
    _GOOD,
    SOURCE_VARS,
    _Layout,
    status_of,
    total_status_of,
    value_status,
)
from server.opcua.writer import ValueWriter, _Slot, double_variant

_CHUNK = 50  # sources between two turns of the event loop (about 450 values)
_FLAGS = tuple(DataFlag(i) for i in range(len(DataFlag)))  # indexed by flag value


class _Plan:
    """The slots of one source order: per variable of SOURCE_VARS, the slot of each row
    (None: the source has no variable in this server), and each row's flag slot."""

    def __init__(self, writer: ValueWriter, layout: _Layout, sources: Sequence[str]) -> None:
        entries = [layout.sources.get(s) for s in sources]
        self.rows = [i for i, e in enumerate(entries) if e is not None]
        present = [e for e in entries if e is not None]
        self.columns: list[tuple[Callable[[Any], Any], bool, list[_Slot]]] = [
            (get, spec.total, writer.slots(e[0][k][0] for e in present))
            for k, (spec, get) in enumerate(SOURCE_VARS)]
        self.flags = writer.slots(e[1] for e in present)


class SourceColumnWriter:
    """Writes the source variables of a minute from its SourceColumns (see the module)."""

    def __init__(self, writer: ValueWriter, layout: _Layout) -> None:
        self._writer = writer
        self._layout = layout
        self._plan: tuple[tuple[str, ...], _Plan] | None = None

    def plan(self, sources: tuple[str, ...]) -> _Plan:
        """The resolved slots of this source order (kept while the order stays)."""
        if self._plan is None or self._plan[0] != sources:
            self._plan = (sources, _Plan(self._writer, self._layout, sources))
        return self._plan[1]

    async def write(self, cols: SourceColumns, source_time: ua.DateTime,
                    server_time: ua.DateTime) -> None:
        """Every source variable and data flag of the minute, a chunk of sources at a time."""
        plan = self.plan(cols.sources)
        rows = np.asarray(plan.rows, np.intp)
        flags = cols.flag[rows].tolist()
        status = [status_of(f) for f in _FLAGS]
        total = [total_status_of(f) for f in _FLAGS]
        # The flag is always a good value: it is what explains the others' status. One
        # DataValue per flag serves every source (the writer never mutates one).
        flag_dv = [ua.DataValue(ua.Variant(f.name, ua.VariantType.String), _GOOD,
                                SourceTimestamp=source_time, ServerTimestamp=server_time)
                   for f in _FLAGS]
        columns = [(np.asarray(get(cols))[rows].tolist(), is_total, slots)
                   for get, is_total, slots in plan.columns]
        data_value = ua.DataValue
        for start in range(0, len(flags), _CHUNK):
            if start:
                await asyncio.sleep(0)  # the drivers and the clients between two chunks
            end = start + _CHUNK
            items: list[tuple[_Slot, ua.DataValue]] = []
            for values, is_total, slots in columns:
                codes = total if is_total else status
                for slot, value, flag in zip(slots[start:end], values[start:end],
                                             flags[start:end], strict=True):
                    code = codes[flag]
                    if value != value:  # NaN: no value, never Good (layout.value_status)
                        code = value_status(value, code)
                    items.append((slot, data_value(double_variant(value), code,
                                                   SourceTimestamp=source_time,
                                                   ServerTimestamp=server_time)))
            items += [(slot, flag_dv[f]) for slot, f in zip(plan.flags[start:end],
                                                            flags[start:end], strict=True)]
            await self._writer.write_many(items)
