"""The units' and the site's CO2 uncertainty of an hour, a day and the year to date on OPC UA.

Each source's share of the uncertainty comes from the instrument register (constant while
the configuration is, layout._Layout.components); the masses from the closed period's
sources (hour, day) or from their running year totals of the latest minute (year to
date, written with every closed hour). The figures are combined by compute/uncertainty.py
and returned as (node, value) items that the sink writes in the same block as the
period's other values.

Status of a value: Good; UncertainSubNormal when sources without data for the period
were left out of the total; Bad_ConfigurationError (NaN) while a source that emitted has
an input without a registered instrument; Bad_NoData (NaN) without any data or when the
total is zero (no relative figure of nothing).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping

from asyncua import ua
from asyncua.ua.status_codes import StatusCodes

from compute.uncertainty import SourceMass, TotalUncertainty, unit_site_uncertainty
from server.opcua.layout import _GOOD, _NO_DATA, _Layout, _status
from server.opcua.writer import ValueWriter

_UNKNOWN = _status(StatusCodes.BadConfigurationError)
_INCOMPLETE = _status(StatusCodes.UncertainSubNormal)
_CHUNK = 500  # values between two turns of the event loop at start-up


async def write_source_uncertainty(writer: ValueWriter, layout: _Layout,
                                   now: ua.DateTime) -> None:
    """Each source's CO2RelUncertainty (constant while the configuration is), in blocks.

    Bad_ConfigurationError (NaN) while an input tag has no instrument registered. The
    DataValues of a block are built and written between two turns of the event loop: with
    10 000 sources one block would hold it for some 60 ms.
    """
    values = layout.uncertainty
    for start in range(0, len(values), _CHUNK):
        if start:
            await asyncio.sleep(0)
        await writer.write_nodes(
            (nid, ua.DataValue(
                ua.Variant(math.nan if u_pct is None else u_pct, ua.VariantType.Double),
                _UNKNOWN if u_pct is None else _GOOD, ServerTimestamp=now,
                SourceTimestamp=now))
            for nid, u_pct in values[start:start + _CHUNK])


def _value(total: TotalUncertainty) -> tuple[float, ua.StatusCode]:
    if total.unknown:
        return math.nan, _UNKNOWN
    if total.rel_pct is None:
        return math.nan, _NO_DATA
    return total.rel_pct, _INCOMPLETE if total.no_data else _GOOD


def total_items(layout: _Layout, level: str, co2_t: Mapping[str, float],
                source_time: ua.DateTime, server_time: ua.DateTime,
                ) -> list[tuple[ua.NodeId, ua.DataValue]]:
    """The CO2RelUncertainty<level> values of every unit and the site.

    `level`: "hour", "day" or "ytd". `co2_t`: source → its CO2 mass of the period (t); a
    configured source missing from it, or NaN, has no data. Pure computation: callers on
    the event loop with thousands of sources run it in a worker thread.
    """
    nodes = layout.totals.get(level)
    if not nodes:
        return []
    parts = [SourceMass(src, unit, float(co2_t.get(src, math.nan)), comps)
             for src, (unit, comps) in layout.components.items()]
    units, site = unit_site_uncertainty(parts, [u for u in nodes if u])
    out: list[tuple[ua.NodeId, ua.DataValue]] = []
    for unit, total in (*units.items(), ("", site)):
        nid = nodes.get(unit)
        if nid is None:
            continue
        value, status = _value(total)
        out.append((nid, ua.DataValue(ua.Variant(value, ua.VariantType.Double), status,
                                      SourceTimestamp=source_time,
                                      ServerTimestamp=server_time)))
    return out

