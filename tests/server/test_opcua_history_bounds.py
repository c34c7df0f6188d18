"""HistoryRead ReadRaw with ReturnBounds (OPC UA Part 11, 4.4 and 6.4.3.2), over TCP.

The historian holds s1_co2 minutes 08:00..08:04 (08:02 failed: Bad, no value); worked
examples after Part 11 Table 1 (values at 5:00, 5:02, 5:03, ...): the bounding values are
the value at or before StartTime and the value at or after EndTime in the direction of
reading, BadBoundNotFound stamped with the requested time where the historian has none.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.status_codes import StatusCodes

from server.opcua.sink import OpcUaSink
from tests.server.test_opcua_history import code, history_read, raw_details, val
from tests.server.test_opcua_tag_history import T0, running, tag

__all__ = ["running"]  # the module's fixture, shared

pytestmark = pytest.mark.asyncio(loop_scope="module")

M = [timedelta(minutes=i) for i in range(11)]
S30 = timedelta(seconds=30)
HOUR = timedelta(hours=1)
NOT_FOUND = StatusCodes.BadBoundNotFound


def bounds(start: datetime | None, end: datetime | None,
           n: int = 0) -> ua.ReadRawModifiedDetails:
    d = raw_details(start or ua.get_win_epoch(), end or ua.get_win_epoch(), n)
    d.ReturnBounds = True
    return d


def stamps(values: list[ua.DataValue]) -> list[timedelta]:
    """Source timestamps as offsets from T0."""
    assert all(v.SourceTimestamp is not None for v in values)
    return [v.SourceTimestamp - T0 for v in values]  # type: ignore[operator]


async def read(client: Client, ns: int, details: ua.ReadRawModifiedDetails,
               ) -> tuple[list[ua.DataValue], int]:
    """All pages of one read: the values and the number of calls."""
    values: list[ua.DataValue] = []
    cp: bytes | None = None
    calls = 0
    while True:
        (res,) = await history_read(client, details, [tag(ns)], [cp])
        assert res.StatusCode.is_good()
        page = res.HistoryData.DataValues
        assert details.NumValuesPerNode == 0 or len(page) <= details.NumValuesPerNode
        values += page
        calls += 1
        cp = res.ContinuationPoint
        if not cp:
            return values, calls


async def test_forward_bounds_outside_the_range(
        running: tuple[OpcUaSink, Client, int]) -> None:
    _sink, client, ns = running
    # 08:00:30 .. 08:03:30 (Table 1 "5:01 5:04 Yes"): 08:00 before, 08:01..08:03, 08:04 after.
    values, _ = await read(client, ns, bounds(T0 + S30, T0 + M[3] + S30))
    assert stamps(values) == M[:5]
    assert [val(v) for v in values] == [12.0, 12.4, None, 11.0, 12.6]
    # Without bounds only the inside minutes.
    plain, _ = await read(client, ns, raw_details(T0 + S30, T0 + M[3] + S30))
    assert stamps(plain) == M[1:4]


async def test_values_at_start_and_end_are_their_own_bounds(
        running: tuple[OpcUaSink, Client, int]) -> None:
    _sink, client, ns = running
    # Table 1 "5:00 5:05 Yes": the value at the end time is returned as the end bound
    # (without bounds the end is excluded); the end bound here is the Bad minute.
    values, _ = await read(client, ns, bounds(T0 + M[1], T0 + M[2]))
    assert [(v.SourceTimestamp, val(v), code(v)) for v in values] == [
        (T0 + M[1], 12.4, StatusCodes.Good),
        (T0 + M[2], None, StatusCodes.BadCommunicationError)]


async def test_bound_not_found_on_both_sides(running: tuple[OpcUaSink, Client, int]) -> None:
    _sink, client, ns = running
    values, _ = await read(client, ns, bounds(T0 - HOUR, T0 + M[10]))
    assert stamps(values) == [-HOUR, *M[:5], M[10]]
    assert code(values[0]) == code(values[-1]) == NOT_FOUND
    assert val(values[0]) is None and val(values[-1]) is None
    # StartTime = EndTime before all data (Table 1 "4:48 4:48 0 Yes"): FIRST, then 08:00.
    values, _ = await read(client, ns, bounds(T0 - HOUR, T0 - HOUR))
    assert stamps(values) == [-HOUR, M[0]] and code(values[0]) == NOT_FOUND
    # … with one value per call: FIRST alone, the end bound with the next call.
    values, calls = await read(client, ns, bounds(T0 - HOUR, T0 - HOUR, n=1))
    assert stamps(values) == [-HOUR, M[0]] and calls == 2
    # A value at StartTime = EndTime is both bounds, sent once.
    values, _ = await read(client, ns, bounds(T0 + M[3], T0 + M[3]))
    assert stamps(values) == [M[3]] and val(values[0]) == 11.0


async def test_backward_bounds(running: tuple[OpcUaSink, Client, int]) -> None:
    _sink, client, ns = running
    # StartTime after EndTime (Table 1 "5:04 5:01 Yes"): newest first, the bounds are the
    # value at or after the start and the value at or before the end.
    values, _ = await read(client, ns, bounds(T0 + M[3] + S30, T0 + S30))
    assert stamps(values) == [M[4], M[3], M[2], M[1], M[0]]
    values, _ = await read(client, ns, bounds(T0 + M[10], T0 - HOUR))
    assert stamps(values) == [M[10], M[4], M[3], M[2], M[1], M[0], -HOUR]
    assert code(values[0]) == code(values[-1]) == NOT_FOUND
    # EndTime and NumValuesPerNode alone (Table 1 "NULL 5:06 3 Yes"): the value at or after
    # the end first, counted in the three.
    values, _ = await read(client, ns, bounds(None, T0 + M[3] + S30, n=3))
    assert stamps(values)[:3] == [M[4], M[3], M[2]]


async def test_bounds_across_continuation_points(
        running: tuple[OpcUaSink, Client, int]) -> None:
    _sink, client, ns = running
    # Two per call: the bounds count, the end bound comes alone in a third call.
    values, calls = await read(client, ns, bounds(T0 + S30, T0 + M[3] + S30, n=2))
    assert calls == 3 and stamps(values) == M[:5]
    # One per call, backward, with both bounds not found: every value exactly once.
    values, calls = await read(client, ns, bounds(T0 + M[10], T0 - HOUR, n=1))
    assert calls == 7 and stamps(values) == [M[10], M[4], M[3], M[2], M[1], M[0], -HOUR]
    # Start only with NumValuesPerNode (Table 1 "5:01 NULL 3 Yes"): the start bound counts.
    values, calls = await read(client, ns, bounds(T0 + S30, None, n=3))
    assert stamps(values[:3]) == [M[0], M[1], M[2]]
