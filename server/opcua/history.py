"""OPC UA HistoryRead of the result variables, answered from the historian.

asyncua's HistoryManager keeps its own copy of every value it historizes (a dict or its
SQLite store); the historian already holds every result, so this manager answers from the
historian's tables instead and stores nothing itself. Historized: the source and unit
minute values, CO2Hour, the unit day values, the allowance position and the raw tags
(Tags/<device>/<tag>: the live value is the last sample, the history its minute statistics,
see tag_series); not the running totals (today, year to date), which the historian does
not keep per minute.

Served (OPC UA Part 11): ReadRawModifiedDetails (raw only, NumValuesPerNode and
continuation points, both time directions; ReturnBounds: the bounding values at StartTime
and EndTime, the value at or before the start and at or after the end in the direction of
reading, BadBoundNotFound stamped with that time where the historian has none; they count
towards NumValuesPerNode and a pending end bound comes with the next page),
ReadAtTimeDetails (stepped: a minute's value holds for its minute) and ReadProcessedDetails
with the Part 13 aggregates Average, Minimum, Maximum, Count and Total;
ReadEventDetails on the Server object and the site (the alarm journal, as the
AlarmConditionType events the live server sends; forward in time only; the EventFilter's
WhereClause selects the events, see where.py, and NumValuesPerNode counts those returned).
Each value carries the minute start (period start; the allowance: the end of its hour) as
source timestamp and the StatusCode the live value had (from the row's HJ 212
flag).
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import math
import struct
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, cast
from zoneinfo import ZoneInfo

from asyncua import ua
from asyncua.common.events import Event
from asyncua.server.history import HistoryManager
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes

from model.records import AlarmEvent
from server.heap import collection_paused
from server.opcua.conditions import (
    _SERVER,
    _Condition,
    _event_fields,
    _new_event,
    restore_messages,
)
from server.opcua.layout import (
    _GOOD,
    ALLOWANCE_VARS,
    SOURCE_VARS,
    UNIT_DAY_VARS,
    UNIT_VARS,
    _Layout,
    _ns0,
    _status,
    _ts,
    period_status,
    status_of,
    total_status_of,
)
from server.opcua.where import FilterUnsupported, WhereClause

if TYPE_CHECKING:
    from asyncua.server.internal_server import InternalServer

MAX_RETURN_DATA_VALUES = 10_000  # per node and call; more come with a continuation point
MINUTE_S = 60.0  # a minute row's value holds for its minute
_MS = timedelta(milliseconds=1)
_FAR_PAST, _FAR_FUTURE = datetime(1970, 1, 1, tzinfo=UTC), datetime(9999, 1, 1, tzinfo=UTC)
_CP_PREFIX = b"csh1"  # our continuation points: prefix, kind byte, int64 ms (stateless)
_CP = struct.Struct("<4scq")
_EVENT_CP = struct.Struct("<4scqi")  # …and how many events at that ms were already sent
_HAS_SUBTYPE = _ns0(ObjectIds.HasSubtype)
_EVENT_HISTORY = 0x4  # EventNotifier bit HistoryRead (Part 3, 5.4)
_HISTORIAN_CALCULATED = 0x1  # StatusCode info bits (Part 4, 7.39; Part 11, 6.3)
_HISTORIAN_INTERPOLATED = 0x2

# Variable name → historian column and the factor to the variable's unit.
_COLUMNS: dict[str, tuple[str, float]] = {
    "CO2Dry": ("co2_dry_pct", 1.0),
    "CO2MgM3": ("co2_mg_m3", 1.0),
    "FlowActual": ("flow_act_m3_h", 1.0),
    "FlowStdDry": ("flow_std_dry_m3_h", 1.0),
    "CO2Rate": ("co2_rate_kg_h", 1e-3),  # stored in kg/h, served in t/h
    "CO2Minute": ("co2_kg", 1.0),
}

_DAY_COLUMNS = {"CO2Day": "co2_t", "CO2FactorDay": "co2_factor_t",
                "ReconciliationDiff": "reconciliation_diff_pct", "CO2eDay": "co2e_t"}
_ALLOWANCE_COLUMNS = {"Annual": "annual_t", "EmittedYTD": "ytd_t", "UsedPercent": "used_pct",
                      "Headroom": "headroom_t", "ForecastYearEnd": "forecast_year_end_t",
                      "ForecastShortfall": "forecast_shortfall_t",
                      "ShortfallCost": "shortfall_cost_cny"}

AGGREGATES: dict[int, str] = {
    ObjectIds.AggregateFunction_Average: "Average",
    ObjectIds.AggregateFunction_Minimum: "Minimum",
    ObjectIds.AggregateFunction_Maximum: "Maximum",
    ObjectIds.AggregateFunction_Count: "Count",
    ObjectIds.AggregateFunction_Total: "Total",
}


class MinuteHistory(Protocol):
    """The historian's reads for HistoryRead: result rows and the alarm journal."""

    async def history_rows(self, table: str, ident: str, start: datetime, end: datetime, *,
                           time_column: str = "t_ms", limit: int | None = None,
                           newest_first: bool = False) -> list[dict[str, Any]]:
        """Rows of one identifier of a result table with start ≤ time < end."""

    async def alarm_journal(self, start: datetime, end: datetime, rule: str | None = None,
                            limit: int = 10000) -> list[AlarmEvent]:
        """Journaled alarm transitions with start ≤ t < end, oldest first."""

    async def last_alarm_event(self, rule: str, *, skip_causes: Collection[str] = (),
                               before: datetime | None = None) -> AlarmEvent | None:
        """The newest journaled transition of `rule` whose cause is not in `skip_causes`
        (with t < `before` if given)."""


def _flag_status(row: dict[str, Any]) -> ua.StatusCode:
    return status_of(row["flag"])


def _hour_status(row: dict[str, Any]) -> ua.StatusCode:
    # As hour_status: Good when valid, substitute when substituted, BadNoData when the
    # server did not run for it, else the flag's.
    return period_status(row["valid"], row["substituted"], row["flag"],
                         row.get("missing_reason") or "")


def _day_status(row: dict[str, Any]) -> ua.StatusCode:
    return total_status_of(row["flag"])


def _diff_status(row: dict[str, Any]) -> ua.StatusCode:
    if row["reconciliation_exceeded"]:
        return _status(StatusCodes.UncertainEngineeringUnitsExceeded)
    return total_status_of(row["flag"])


def _good(row: dict[str, Any]) -> ua.StatusCode:
    return _GOOD  # an accounting figure without a flag


@dataclass(frozen=True, slots=True)
class Series:
    """One historized variable: where the historian keeps it and how its status is made."""

    table: str
    ident: str  # source, unit, or (table period) level
    column: str
    factor: float = 1.0  # historian unit → the variable's unit
    period_s: float = MINUTE_S  # how long one row's value holds
    status: Callable[[dict[str, Any]], ua.StatusCode] = _flag_status
    time_column: str = "t_ms"  # the row's source timestamp
    # Raw tags: the minute's extremes and sample count, for Minimum, Maximum and Count
    # (None: those aggregates are taken over `column`, one row one value).
    min_column: str | None = None
    max_column: str | None = None
    count_column: str | None = None

    async def rows(self, historian: MinuteHistory, start: datetime, end: datetime, *,
                   limit: int | None = None, newest_first: bool = False) -> list[dict[str, Any]]:
        """Its rows with start ≤ t < end."""
        return await historian.history_rows(self.table, self.ident, start, end,
                                            time_column=self.time_column, limit=limit,
                                            newest_first=newest_first)


_UNIT_COLUMNS = {"Output": "output_mwh", "Intensity": "intensity_t_mwh"}
HOUR_S, DAY_S = 3600.0, 86400.0


def tag_series(tag: str) -> Series:
    """A raw tag's history: its minute statistics (historian table tag_minute).

    A value is the minute's mean, stamped with the minute start, with the status of the
    minute's HJ 212 flag (as the minute results); Minimum and Maximum are the extremes of
    the samples (the minutes' min and max), Count the number of samples polled in Good
    minutes, Average and Total are over the minute means.
    """
    return Series("tag_minute", tag, "mean", min_column="min", max_column="max",
                  count_column="count")


def historized_series(layout: _Layout) -> dict[ua.NodeId, Series]:
    """The variables the historian holds, by NodeId: source and unit minute values, CO2Hour,
    the unit day values, the allowance position and the raw tags' minute statistics (not
    the running totals, which it does not keep)."""
    out: dict[ua.NodeId, Series] = {tag_nid: tag_series(tag)
                                    for tag, tag_nid in layout.tags.items()}
    for source, (writes, _flag) in layout.sources.items():
        for (spec, _get), (nid, _g, _total) in zip(SOURCE_VARS, writes, strict=True):
            column = _COLUMNS.get(spec.name)
            if column is not None:
                out[nid] = Series("source_minute", source, *column)
    for unit, (uwrites, _uflag) in layout.units.items():
        for (spec, _uget), (nid, _ug, _total) in zip(UNIT_VARS, uwrites, strict=True):
            if spec.name in _UNIT_COLUMNS:
                out[nid] = Series("unit_minute", unit, _UNIT_COLUMNS[spec.name])
    for source, nid in layout.hours.items():
        out[nid] = Series("source_hour", source, "co2_t", period_s=HOUR_S, status=_hour_status)
    for unit, days in layout.unit_days.items():
        for (spec, _dget), (nid, _dg, is_diff) in zip(UNIT_DAY_VARS, days, strict=True):
            out[nid] = Series("unit_day", unit, _DAY_COLUMNS[spec.name], period_s=DAY_S,
                              status=_diff_status if is_diff else _day_status)
    for (spec, _aget), (nid, _ag) in zip(ALLOWANCE_VARS, layout.allowance, strict=True):
        # The position at the end of each hour, stamped with that end (as the live value).
        out[nid] = Series("period", "hour", _ALLOWANCE_COLUMNS[spec.name], period_s=HOUR_S,
                          status=_good, time_column="t_end_ms")
    return out


def mark_historized(layout: _Layout, nodes: Iterable[ua.NodeId]) -> None:
    """Make `nodes` Historizing with AccessLevel CurrentRead | HistoryRead before AddNodes."""
    wanted = set(nodes)
    level = cast("ua.Byte", ua.AccessLevel.CurrentRead.mask | ua.AccessLevel.HistoryRead.mask)
    for item in layout.items:
        if item.RequestedNewNodeId in wanted:
            attrs = cast(ua.VariableAttributes, item.NodeAttributes)
            attrs.AccessLevel = level
            attrs.UserAccessLevel = level
            attrs.Historizing = True


def mark_event_history(layout: _Layout) -> None:
    """Make the site object's EventNotifier say HistoryRead before AddNodes."""
    for item in layout.items:
        if item.RequestedNewNodeId == layout.site:
            attrs = cast(ua.ObjectAttributes, item.NodeAttributes)
            attrs.EventNotifier = cast("ua.Byte", attrs.EventNotifier | _EVENT_HISTORY)


def _unset(t: datetime | None) -> bool:
    return t is None or t <= ua.get_win_epoch()


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _pack_cp(kind: bytes, t: datetime) -> bytes:
    return _CP.pack(_CP_PREFIX, kind, round(t.timestamp() * 1000))


def _unpack_cp(cp: bytes, kind: bytes) -> datetime | None:
    """The time a continuation point resumes at; None when it is not ours."""
    if len(cp) != _CP.size:
        return None
    prefix, got, ms = _CP.unpack(cp)
    if prefix != _CP_PREFIX or got != kind:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC)


def _bad(code: int) -> ua.HistoryReadResult:
    return ua.HistoryReadResult(StatusCode=_status(code))


class HistorianHistoryManager(HistoryManager):
    """asyncua's HistoryManager that reads the source minute variables from the historian.

    Events and everything not historized go to asyncua's own manager (it keeps nothing
    for these nodes, so nothing is stored twice).
    """

    def __init__(self, iserver: InternalServer, historian: MinuteHistory,
                 series: dict[ua.NodeId, Series], layout: _Layout | None = None,
                 site_id: str = "", zone: ZoneInfo | None = None,
                 max_values: int = MAX_RETURN_DATA_VALUES) -> None:
        super().__init__(iserver)
        self.historian = historian
        self.series = series
        self.layout = layout  # None: no event history
        self.site_id = site_id
        self.zone = zone or ZoneInfo("UTC")
        self.max_values = max_values

    async def read_history(self, params: ua.HistoryReadParameters) -> list[ua.HistoryReadResult]:
        """One result per node to read, in request order (Part 11, 6.4)."""
        details = params.HistoryReadDetails
        if params.TimestampsToReturn == ua.TimestampsToReturn.Neither:  # Part 11, 6.4.1
            return [_bad(StatusCodes.BadTimestampsToReturnInvalid) for _ in params.NodesToRead]
        if params.ReleaseContinuationPoints:  # stateless points: nothing to release
            return [ua.HistoryReadResult() for _ in params.NodesToRead]
        if isinstance(details, ua.ReadProcessedDetails):
            if len(details.AggregateType) != len(params.NodesToRead):
                return [_bad(StatusCodes.BadAggregateListMismatch) for _ in params.NodesToRead]
            return [await self._processed(details, rv, agg)
                    for rv, agg in zip(params.NodesToRead, details.AggregateType, strict=True)]
        results = []
        for rv in params.NodesToRead:
            data = isinstance(details, ua.ReadRawModifiedDetails | ua.ReadAtTimeDetails)
            series = self.series.get(rv.NodeId)
            if data and series is None:
                results.append(_bad(StatusCodes.BadHistoryOperationUnsupported))
            elif isinstance(details, ua.ReadRawModifiedDetails) and series is not None:
                results.append(await self._raw(details, rv, series))
            elif isinstance(details, ua.ReadAtTimeDetails) and series is not None:
                results.append(await self._at_time(details, series))
            elif isinstance(details, ua.ReadEventDetails):
                results.append(await self._events(details, rv))
            else:
                results.append(await self._read_history(details, rv))
        return results

    async def _raw(self, details: ua.ReadRawModifiedDetails, rv: ua.HistoryReadValueId,
                   series: Series) -> ua.HistoryReadResult:
        if details.IsReadModified:  # the historian keeps no superseded values
            return _bad(StatusCodes.BadHistoryOperationUnsupported)
        start = None if _unset(details.StartTime) else _utc(details.StartTime)
        end = None if _unset(details.EndTime) else _utc(details.EndTime)
        wanted = details.NumValuesPerNode
        if start is None and (end is None or wanted == 0):
            return _bad(StatusCodes.BadHistoryOperationInvalid)
        if end is None and wanted == 0:
            return _bad(StatusCodes.BadHistoryOperationInvalid)
        page = min(wanted or self.max_values, self.max_values)
        forward = start is not None and (end is None or start <= end)
        resume = None
        if rv.ContinuationPoint:
            resume = _unpack_cp(rv.ContinuationPoint, b"r")
            if resume is None:
                return _bad(StatusCodes.BadContinuationPointInvalid)
        if forward:
            assert start is not None
            lo = resume or start
            # Start included, end excluded; equal times ask for values at that time.
            hi = start + _MS if end == start else (end or _FAR_FUTURE)
            rows = await series.rows(self.historian, lo, hi, limit=page + 1)
        else:
            top = cast(datetime, start if start is not None else end)
            hi = (resume or top) + _MS  # start (or a lone end) included
            lo = end + _MS if start is not None and end is not None else _FAR_PAST
            rows = await series.rows(self.historian, lo, hi, limit=page + 1,
                                     newest_first=True)
        values: list[ua.DataValue] = []
        bounds = details.ReturnBounds
        # The time the reading begins at: its first bound (Part 11, 4.4), sent with the
        # first page only; a row at that time is the bound itself.
        begin = cast(datetime, start if start is not None else end)
        if bounds and resume is None and (not rows or rows[0]["t"] != begin):
            values.append(await self._bound(series, begin, older=forward))
        budget = page - len(values)  # the bounds count towards NumValuesPerNode
        values += [self._value(row, series) for row in rows[:budget]]
        result = ua.HistoryReadResult(HistoryData=ua.HistoryData(DataValues=values))
        if len(rows) > budget:
            result.ContinuationPoint = cast("ua.ByteString", _pack_cp(b"r", rows[budget]["t"]))
        elif bounds and start is not None and end is not None:
            # The far bound; a row at EndTime already sent (StartTime = EndTime) is it.
            sent = rows[:budget]
            if sent and sent[-1]["t"] == end:
                pass
            elif len(values) < page:
                values.append(await self._bound(series, end, older=not forward))
            else:  # no room left: the end bound alone comes with the next call
                result.ContinuationPoint = cast("ua.ByteString", _pack_cp(b"r", end))
        return result

    async def _bound(self, series: Series, at: datetime, *, older: bool) -> ua.DataValue:
        """A bounding value (Part 11, 4.4): the newest value at or before `at` (`older`)
        or the oldest at or after it; BadBoundNotFound stamped `at` when there is none."""
        if older:
            rows = await series.rows(self.historian, _FAR_PAST, at + _MS, limit=1,
                                     newest_first=True)
        else:
            rows = await series.rows(self.historian, at, _FAR_FUTURE, limit=1)
        if rows:
            return self._value(rows[0], series)
        return ua.DataValue(ua.Variant(), _status(StatusCodes.BadBoundNotFound),
                            SourceTimestamp=_ts(at))

    async def _events(self, details: ua.ReadEventDetails,
                      rv: ua.HistoryReadValueId) -> ua.HistoryReadResult:
        """Journaled transitions as events; each rule's condition state is rebuilt from the
        transitions read, the first from its own row (as after a restart)."""
        layout = self.layout
        if layout is None or rv.NodeId not in (_SERVER, layout.site):
            return _bad(StatusCodes.BadHistoryOperationUnsupported)
        start = None if _unset(details.StartTime) else _utc(details.StartTime)
        end = None if _unset(details.EndTime) else _utc(details.EndTime)
        wanted = details.NumValuesPerNode
        if start is None or (end is None and wanted == 0):
            return _bad(StatusCodes.BadHistoryOperationInvalid if end is None
                        else StatusCodes.BadHistoryOperationUnsupported)  # newest first
        if end is not None and end < start:
            return _bad(StatusCodes.BadHistoryOperationUnsupported)
        skip = 0
        lo = start
        if rv.ContinuationPoint:
            cp = rv.ContinuationPoint
            if len(cp) != _EVENT_CP.size:
                return _bad(StatusCodes.BadContinuationPointInvalid)
            prefix, kind, ms, skip = _EVENT_CP.unpack(cp)
            if prefix != _CP_PREFIX or kind != b"e" or skip < 0:
                return _bad(StatusCodes.BadContinuationPointInvalid)
            lo = datetime.fromtimestamp(ms / 1000, UTC)
        try:
            where = WhereClause(details.Filter.WhereClause if details.Filter else None,
                                self._is_subtype)
        except FilterUnsupported as exc:
            return _bad(exc.code)
        page = min(wanted or self.max_values, self.max_values)
        hi = (start + _MS if end == start
              else end or datetime(9999, 1, 1, tzinfo=UTC))
        conditions: dict[str, _Condition] = {}
        fields: list[ua.HistoryEventFieldList] = []
        # Where the reading stands: the time of the last transition consumed and how many
        # at that time were (the journal has equal times; the continuation point says both).
        at, done = lo, skip
        nxt: AlarmEvent | None = None
        chunk = page + 1
        while nxt is None:
            journal = (await self.historian.alarm_journal(at, hi, limit=done + chunk))[done:]
            for ev in journal:
                if len(fields) == page:
                    nxt = ev  # more to read: it starts the next page
                    break
                at, done = (at, done + 1) if ev.t == at else (ev.t, 1)
                event = await self._event(conditions, ev, rv.NodeId, layout)
                if where.matches(event):  # every transition advances its condition
                    fields.append(ua.HistoryEventFieldList(
                        EventFields=event.to_event_fields(details.Filter.SelectClauses)))
            if len(journal) < chunk:
                break  # the journal is read to the end of the range
            chunk = max(chunk, 1000)  # a selective clause: read on in larger steps
        result = ua.HistoryReadResult(HistoryData=ua.HistoryEvent(Events=fields))
        if nxt is not None:
            result.ContinuationPoint = cast("ua.ByteString", _EVENT_CP.pack(
                _CP_PREFIX, b"e", round(nxt.t.timestamp() * 1000), done if nxt.t == at else 0))
        return result

    async def _event(self, conditions: dict[str, _Condition], ev: AlarmEvent,
                     notifier: ua.NodeId, layout: _Layout) -> Event:
        """The transition as the event the live server sent; its rule's condition state is
        rebuilt from the transitions read, the first from its own row (as after a restart)."""
        cond = conditions.get(ev.rule)
        if cond is None:
            nid = layout.conditions.get(ev.rule) or ua.NodeId(
                cast("ua.String", f"Alarms.{ev.rule}"), cast("ua.Int16", layout.ns))
            cond = conditions[ev.rule] = _Condition(ev.rule, nid, set())
            # A first transition that is an action: the alarm's text from before it.
            await restore_messages(conditions, [ev], self.historian)
        cond.advance(ev)
        # The journal keeps no EventId: one derived from the row, the same on every read.
        event_id = hashlib.sha256(
            f"{ev.rule}|{ev.t.isoformat()}|{ev.cause}|{ev.state}|{ev.ack_state}".encode()
        ).digest()[:16]
        return _new_event(notifier, _event_fields(cond, layout.site, self.site_id,
                                                  self.zone, event_id, ev.t))

    def _is_subtype(self, etype: ua.NodeId, wanted: ua.NodeId) -> bool:
        """Whether `etype` is `wanted` or below it in the HasSubtype hierarchy."""
        seen: set[ua.NodeId] = set()
        current: ua.NodeId | None = etype
        while current is not None and current not in seen:
            if current == wanted:
                return True
            seen.add(current)
            node = self.iserver.aspace.get(current)
            current = None
            for ref in node.references if node is not None else []:
                if (not ref.IsForward and ref.ReferenceTypeId == _HAS_SUBTYPE):
                    current = ref.NodeId
                    break
        return False

    async def _at_time(self, details: ua.ReadAtTimeDetails,
                       series: Series) -> ua.HistoryReadResult:
        """The value at each requested time: the minute holding it (a minute's value holds
        for that minute: stepped), marked HistorianInterpolated unless it starts there."""
        times = [_utc(t) for t in details.ReqTimes]
        if not times or len(times) > self.max_values:
            return _bad(StatusCodes.BadHistoryOperationInvalid)
        minute = timedelta(seconds=series.period_s)  # how long a row holds
        rows = await series.rows(self.historian, min(times) - minute + _MS, max(times) + _MS)
        starts = [r["t"] for r in rows]
        values = []
        for t in times:
            i = bisect.bisect_right(starts, t) - 1
            if i < 0 or t - starts[i] >= minute:
                values.append(ua.DataValue(ua.Variant(), _status(StatusCodes.BadNoData),
                                           SourceTimestamp=_ts(t)))
                continue
            dv = self._value(rows[i], series)
            if starts[i] != t:
                assert dv.StatusCode is not None
                dv.StatusCode = _status(dv.StatusCode.value | _HISTORIAN_INTERPOLATED)
                dv.SourceTimestamp = _ts(t)
            values.append(dv)
        return ua.HistoryReadResult(HistoryData=ua.HistoryData(DataValues=values))

    @staticmethod
    def _value(row: dict[str, Any], series: Series) -> ua.DataValue:
        raw = row[series.column]
        value = (ua.Variant() if raw is None
                 else ua.Variant(float(raw) * series.factor, ua.VariantType.Double))
        return ua.DataValue(value, series.status(row), SourceTimestamp=_ts(row["t"]))

    async def _processed(self, details: ua.ReadProcessedDetails, rv: ua.HistoryReadValueId,
                         aggregate: ua.NodeId) -> ua.HistoryReadResult:
        series = self.series.get(rv.NodeId)
        if series is None:
            return _bad(StatusCodes.BadHistoryOperationUnsupported)
        name = (AGGREGATES.get(cast(int, aggregate.Identifier))
                if aggregate.NamespaceIndex == 0 else None)
        if name is None:
            return _bad(StatusCodes.BadAggregateNotSupported)
        if _unset(details.StartTime) or _unset(details.EndTime):
            return _bad(StatusCodes.BadHistoryOperationInvalid)
        start, end = _utc(details.StartTime), _utc(details.EndTime)
        if start == end:
            return _bad(StatusCodes.BadInvalidArgument)
        span = abs(end - start)
        step = (timedelta(milliseconds=details.ProcessingInterval)
                if details.ProcessingInterval > 0 else span)
        sign = 1 if end > start else -1
        resume = start
        if rv.ContinuationPoint:
            got = _unpack_cp(rv.ContinuationPoint, b"p")
            if got is None:
                return _bad(StatusCodes.BadContinuationPointInvalid)
            resume = got
        # Intervals from the start towards the end (Part 13, 5.4.2.2), the last one shorter.
        intervals: list[tuple[datetime, datetime]] = []
        edge = resume
        while (edge < end if sign > 0 else edge > end) and len(intervals) <= self.max_values:
            nxt = edge + sign * step
            nxt = min(nxt, end) if sign > 0 else max(nxt, end)
            intervals.append((edge, nxt) if sign > 0 else (nxt, edge))
            edge = nxt
        cp = None
        if len(intervals) > self.max_values:
            nxt_start = intervals[self.max_values]
            cp = nxt_start[0] if sign > 0 else nxt_start[1]
            intervals = intervals[:self.max_values]
        values: list[ua.DataValue] = []
        if intervals:
            lo = min(a for a, _b in intervals)
            hi = max(b for _a, b in intervals)
            rows = await series.rows(self.historian, lo, hi)
            for a, b in intervals:
                inside = [r for r in rows if a <= r["t"] < b]
                stamp = a if sign > 0 else b
                values.append(_aggregate(name, inside, series, a, b, stamp))
        result = ua.HistoryReadResult(HistoryData=ua.HistoryData(DataValues=values))
        if cp is not None:
            result.ContinuationPoint = cast("ua.ByteString", _pack_cp(b"p", cp))
        return result


def _aggregate(name: str, rows: list[dict[str, Any]], series: Series, a: datetime,
               b: datetime, stamp: datetime) -> ua.DataValue:
    """One interval's aggregate over its Good rows (Part 13 defaults: TreatUncertainAsBad,
    PercentDataGood 100: any non-Good row makes the result Uncertain)."""
    good_rows = [r for r in rows
                 if r[series.column] is not None and series.status(r).is_good()]
    good = [(r["t"], float(r[series.column]) * series.factor) for r in good_rows]
    calculated = _HISTORIAN_CALCULATED if name in ("Average", "Count", "Total") else 0
    code = (StatusCodes.Good if len(good) == len(rows)
            else StatusCodes.UncertainDataSubNormal) | calculated
    if name == "Count":
        count = (len(good) if series.count_column is None
                 else sum(int(r[series.count_column]) for r in good_rows))
        return _dv(float(count), code, stamp, ua.VariantType.Int32)
    if not good:
        return ua.DataValue(ua.Variant(), _status(StatusCodes.BadNoData),
                            SourceTimestamp=_ts(stamp))
    vals = [v for _t, v in good]
    extreme = (series.min_column if name == "Minimum"
               else series.max_column if name == "Maximum" else None)
    if extreme is not None:  # a raw tag: the samples' extremes, not the means'
        vals = [float(r[extreme]) * series.factor for r in good_rows
                if r[extreme] is not None] or vals
    if name == "Average":
        value = math.fsum(vals) / len(vals)
    elif name == "Minimum":
        value = min(vals)
    elif name == "Maximum":
        value = max(vals)
    else:  # Total: the time integral (value × seconds), each minute's value held for it
        value = math.fsum(v * _overlap_s(t, series.period_s, a, b) for t, v in good)
    return _dv(value, code, stamp, ua.VariantType.Double)


def _overlap_s(t: datetime, period_s: float, a: datetime, b: datetime) -> float:
    """Seconds of the period of `period_s` starting at `t` that lie in [a, b)."""
    return max(0.0, (min(t + timedelta(seconds=period_s), b) - max(t, a)).total_seconds())


def _dv(value: float, code: int, stamp: datetime, vtype: ua.VariantType) -> ua.DataValue:
    v = ua.Variant(int(value) if vtype == ua.VariantType.Int32 else value, vtype)
    return ua.DataValue(v, _status(code), SourceTimestamp=_ts(stamp))


async def historize(layout: _Layout) -> dict[ua.NodeId, Series]:
    """historized_series of the layout, with its variables marked Historizing and the
    event history marked (before AddNodes); in a thread, without collections: hundreds of
    thousands of series for a plant of 100 000 raw tags."""
    def run() -> dict[ua.NodeId, Series]:
        with collection_paused():
            series = historized_series(layout)
            mark_historized(layout, series.keys())
            mark_event_history(layout)
            return series
    return await asyncio.to_thread(run)


async def install(iserver: InternalServer, layout: _Layout, historian: MinuteHistory,
                  series: dict[ua.NodeId, Series], site_id: str, zone: ZoneInfo) -> None:
    """Replace asyncua's history manager by the historian's, serving `series` (historize's),
    and fill in the server's HistoryServerCapabilities truly (call after Server.init and
    AddNodes, before start)."""
    manager = HistorianHistoryManager(iserver, historian, series, layout, site_id, zone)
    await manager.init()
    iserver.history_manager = manager
    # The Server object subscribes to events already; it now also serves their history.
    notifier = iserver.aspace.read_attribute_value(_SERVER, AttributeIds.EventNotifier)
    bits = int(notifier.Value.Value) if notifier.Value is not None else 0
    await iserver.write_attribute_value(_SERVER, ua.DataValue(ua.Variant(
        bits | _EVENT_HISTORY, ua.VariantType.Byte)), AttributeIds.EventNotifier)
    caps = {
        ObjectIds.HistoryServerCapabilities_AccessHistoryDataCapability: True,
        ObjectIds.HistoryServerCapabilities_AccessHistoryEventsCapability: True,
        ObjectIds.HistoryServerCapabilities_InsertDataCapability: False,
        ObjectIds.HistoryServerCapabilities_ReplaceDataCapability: False,
        ObjectIds.HistoryServerCapabilities_UpdateDataCapability: False,
        ObjectIds.HistoryServerCapabilities_DeleteRawCapability: False,
        ObjectIds.HistoryServerCapabilities_DeleteAtTimeCapability: False,
        ObjectIds.HistoryServerCapabilities_InsertAnnotationCapability: False,
        ObjectIds.HistoryServerCapabilities_InsertEventCapability: False,
        ObjectIds.HistoryServerCapabilities_ReplaceEventCapability: False,
        ObjectIds.HistoryServerCapabilities_UpdateEventCapability: False,
        ObjectIds.HistoryServerCapabilities_DeleteEventCapability: False,
        # The historian keeps no time of receipt: values carry source timestamps only.
        ObjectIds.HistoryServerCapabilities_ServerTimestampSupported: False,
    }
    for ident, flag in caps.items():
        await iserver.write_attribute_value(_ns0(ident), ua.DataValue(
            ua.Variant(flag, ua.VariantType.Boolean)))
    for ident, count in ((ObjectIds.HistoryServerCapabilities_MaxReturnDataValues,
                          MAX_RETURN_DATA_VALUES),
                         (ObjectIds.HistoryServerCapabilities_MaxReturnEventValues,
                          MAX_RETURN_DATA_VALUES)):
        await iserver.write_attribute_value(_ns0(ident), ua.DataValue(
            ua.Variant(count, ua.VariantType.UInt32)))
    refs = []
    for ident in AGGREGATES:
        ref = ua.AddReferencesItem()
        ref.SourceNodeId = _ns0(ObjectIds.HistoryServerCapabilities_AggregateFunctions)
        ref.ReferenceTypeId = _ns0(ObjectIds.Organizes)
        ref.IsForward = True
        ref.TargetNodeId = _ns0(ident)
        ref.TargetNodeClass = ua.NodeClass.Object
        refs.append(ref)
    await iserver.isession.add_references(refs)
