"""Block writes of variable values into asyncua's address space, without its per-write deepcopy.

asyncua's `write_attribute_value` awaits one coroutine per monitored item of the node, and
each `MonitoredItemValues.set_current_datavalue` deep-copies the DataValue (to guard
against a caller that mutates it after the write). Profiled with 10 000 monitored items,
those copies and coroutines were more than half of the server's time per notification.

`ValueWriter` does what `AddressSpace.write_attribute_value` and
`MonitoredItemService.datachange_callback` do, in one synchronous pass per block:
the same null value for a Bad status, the same type check, the same trigger / deadband
filter, the same queue (size limit, oldest dropped) of the subscription. What makes the
copy unnecessary here is ownership: the writer builds every DataValue itself (or takes
over the one it is given) and never mutates one once written, so the monitored item's
"current" value cannot change behind its back. Each monitored item still gets its own
MonitoredItemNotification; a client over the wire decodes its own copy of the value,
and a server-internal subscription (no publish requests, in-process) gets a deep copy,
so that no subscriber can mutate a notification into the server's state.

Callbacks that are not asyncua's own `MonitoredItemService.datachange_callback` (a
subclass, anything registered with `add_datachange_callback`) are awaited as asyncua
does, so the fast path never changes what they see.

Once the writes were cheap, the limit (cProfile of the server's loop in
bench/test_opcua_throughput.py, 10 000 items over 4 sessions) was asyncua's generic
encoder of the PublishResponse: about 28 µs (profiled) per MonitoredItemNotification, more
than the write itself. `EncodedSubscription` encodes a subscription's data changes for
the wire in one pass (`encode_data_changes`, the same bytes), and `double_variant` skips
Variant's type guessing. The next stall was the garbage collector: every full collection
walked the whole address space (0.6-1.2 s with 10 000 variables); server/heap.py's
`freeze_heap` (the runtime's, once every sink started) moves it out of the collector's way
and raises the collector's thresholds so that the values of one publishing interval die
young.

What is not coalesced: every value written reaches each monitored item's queue, as with
asyncua (so a client's queue size decides what it keeps); a SampleBlock already carries
only the latest reading of each tag, and a block is written as one pass.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import functools
import logging
import struct
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from asyncua import ua
from asyncua.server.address_space import AddressSpace, AttributeValue, NodeData
from asyncua.server.internal_subscription import InternalSubscription
from asyncua.server.monitored_item_service import MonitoredItemService
from asyncua.server.server import Server
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.ua_binary import create_dataclass_serializer

from model.errors import SinkError
from model.flags import DataFlag
from model.records import SampleBlock, TagTable
from server.opcua.layout import status_of, value_status

log = logging.getLogger(__name__)

_VALUE = ua.AttributeIds.Value  # type: ignore[attr-defined]
_DISABLED = ua.MonitoringMode.Disabled
_STATUS_VALUE = ua.DataChangeTrigger.StatusValue
_NULL = ua.Variant(None, ua.VariantType.Null)
_DOUBLE = ua.VariantType.Double
_ASYNCUA_CALLBACK = MonitoredItemService.datachange_callback
# Writes between two yields to the event loop: 2 000 took 40-70 ms on the loop when the two
# cores were shared (asyncio debug, bench/test_opcua_throughput.py); 500 stay well inside
# the 20 ms a task may hold the loop, and a block of 100k values never stalls other tasks.
_YIELD_EVERY = 500


_DATA_CHANGE_BINARY = ua.NodeId(ua.Int32(ObjectIds.DataChangeNotification_Encoding_DefaultBinary))
# A MonitoredItemNotification of a scalar Double with status and both timestamps: client
# handle, DataValue mask (Value|StatusCode|SourceTimestamp|ServerTimestamp), variant type
# 11, the double, the status code, the two timestamps (100 ns since 1601).
_DOUBLE_NOTE = struct.Struct("<IBBdIqq").pack
_UINT32 = struct.Struct("<I").pack
_INT32 = struct.Struct("<i").pack
_DATA_VALUE_BINARY = create_dataclass_serializer(ua.DataValue)


def encode_data_changes(items: Sequence[ua.MonitoredItemNotification]) -> bytes:
    """The binary body of DataChangeNotification(MonitoredItems=items), byte for byte what
    asyncua's struct_to_binary makes, with a fast path for the scalar Doubles the writer
    builds (about 1 µs a notification instead of 10)."""
    epochs: dict[int, int] = {}  # id(datetime) -> win epoch: a block shares a few datetimes
    to_epoch = ua.datetime_to_win_epoch
    parts = [_INT32(len(items))]
    append = parts.append
    for item in items:
        dv = item.Value
        var = dv.Value
        src, srv, status = dv.SourceTimestamp, dv.ServerTimestamp, dv.StatusCode
        if (var is not None and var.VariantType is _DOUBLE and not var.is_array
                and type(var.Value) is float and status is not None and src is not None
                and srv is not None and dv.SourcePicoseconds is None
                and dv.ServerPicoseconds is None):
            s_epoch = epochs.get(id(src))
            if s_epoch is None:
                s_epoch = epochs[id(src)] = to_epoch(src)
            v_epoch = epochs.get(id(srv))
            if v_epoch is None:
                v_epoch = epochs[id(srv)] = to_epoch(srv)
            append(_DOUBLE_NOTE(item.ClientHandle, 0x0F, 11, var.Value, status.value,
                                s_epoch, v_epoch))
        else:
            append(_UINT32(item.ClientHandle))
            append(_DATA_VALUE_BINARY(dv))
    append(_INT32(0))  # DiagnosticInfos: none (asyncua's subscription never sets any)
    return b"".join(parts)


class EncodedSubscription(InternalSubscription):
    """asyncua's subscription of a client session, with its data changes encoded by
    `encode_data_changes` when they are taken for a PublishResponse.

    The notification goes out as an ExtensionObject holding the encoded body (asyncua
    serialises that as it is), so the bytes on the wire are the same; only the encoding
    is faster. Everything else (queues, acknowledgements, republish, keep-alive) is
    asyncua's own. `ValueWriter` gives this class to client subscriptions it writes to.
    """

    def _pop_triggered_datachanges(self, result: ua.PublishResult) -> None:
        if not self._triggered_datachanges:
            return
        items = [item for queued in self._triggered_datachanges.values() for item in queued]
        self._triggered_datachanges = {}
        result.NotificationMessage.NotificationData.append(
            ua.ExtensionObject(TypeId=_DATA_CHANGE_BINARY,
                               Body=ua.ByteString(encode_data_changes(items))))


class _Slot:
    """One variable's Value attribute, resolved once: the node data and attribute holder."""

    __slots__ = ("attval", "nid", "node")

    def __init__(self, nid: ua.NodeId, node: NodeData, attval: AttributeValue) -> None:
        self.nid = nid
        self.node = node
        self.attval = attval


class ValueWriter:
    """Writes the Value attribute of many variables at once, each as `write_attribute_value`
    would, but without a deepcopy and a coroutine per monitored item.

    DataValues handed to `write` / `write_many` belong to the writer from then on: the
    caller must not mutate them (they are the server's state and the monitored items'
    current values). `write_doubles` builds them from columns.
    """

    def __init__(self, server: Server) -> None:
        self._aspace: AddressSpace = server.iserver.aspace
        self._slots: dict[ua.NodeId, _Slot] = {}
        # Subscriptions without a publishing loop that got a value: published after the block.
        self._pending: set[InternalSubscription] = set()

    def slot(self, nid: ua.NodeId) -> _Slot:
        """The resolved Value attribute of `nid` (cached); SinkError if it has none."""
        found = self._slots.get(nid)
        if found is not None:
            return found
        node = self._aspace._nodes.get(nid)  # asyncua has no public accessor for NodeData
        attval = node.attributes.get(_VALUE) if node is not None else None
        if node is None or attval is None:
            raise SinkError(f"OPC UA: no variable {nid.to_string()} to write")
        found = self._slots[nid] = _Slot(nid, node, attval)
        return found

    def slots(self, nids: Iterable[ua.NodeId]) -> list[_Slot]:
        """The resolved slots of `nids`, in order (built once, kept by the caller)."""
        return [self.slot(nid) for nid in nids]

    async def write(self, nid: ua.NodeId, value: ua.DataValue) -> None:
        """One value, as `Server.write_attribute_value(nid, value)`."""
        await self.write_many([(self.slot(nid), value)])

    async def write_nodes(self, items: Iterable[tuple[ua.NodeId, ua.DataValue]]) -> None:
        """Every (node, value) in order, as one block (see write_many)."""
        await self.write_many([(self.slot(nid), value) for nid, value in items])

    async def write_many(self, items: Iterable[tuple[_Slot, ua.DataValue]]) -> None:
        """Every (slot, value) in order, yielding to the event loop every few thousand."""
        for n, (slot, value) in enumerate(items, 1):
            others = self._set(slot, value)
            if others:
                for handle, callback in others:
                    await self._call(handle, callback, value)
            if n % _YIELD_EVERY == 0:
                await self._flush_triggers()
                await asyncio.sleep(0)
        await self._flush_triggers()

    async def write_doubles(self, slots: Sequence[_Slot], values: Sequence[float],
                            statuses: Sequence[ua.StatusCode],
                            source_times: Sequence[ua.DateTime | None],
                            server_time: ua.DateTime) -> None:
        """Double values from columns: slots[i] gets values[i] with statuses[i] and
        source_times[i]; one server timestamp for the block."""
        data_value = ua.DataValue
        await self.write_many(
            (slot, data_value(double_variant(value), status, SourceTimestamp=t,
                              ServerTimestamp=server_time))
            for slot, value, status, t in zip(slots, values, statuses, source_times,
                                              strict=True))

    # --- internals ----------------------------------------------------------------------

    def _set(self, slot: _Slot, value: ua.DataValue) -> list[tuple[int, Any]]:
        """Store the value and notify asyncua's monitored items; returns the other
        callbacks, which the caller awaits."""
        attval = slot.attval
        status = value.StatusCode
        if status is not None and status.is_bad():
            # Part 4, 7.7.1: with a Bad status the value is ignored and set to null.
            value = dataclasses.replace(value, Value=_NULL)
        else:
            current = attval.value
            cv = current.Value if current is not None else None
            nv = value.Value
            if (cv is not None and nv is not None and cv.VariantType != nv.VariantType
                    and not self._aspace._is_expected_variant_type(value, attval, slot.node)):
                return []  # refused and logged, as write_attribute_value does
        if attval.value_setter is not None:
            attval.value_setter(slot.node, _VALUE, value)
        else:
            attval.value = value
            attval.value_callback = None
        others: list[tuple[int, Any]] = []
        for handle, callback in attval.datachange_callbacks.items():
            srv = getattr(callback, "__self__", None)
            if (type(srv) is MonitoredItemService
                    and getattr(callback, "__func__", None) is _ASYNCUA_CALLBACK):
                self._notify(srv, handle, value)
            else:
                others.append((handle, callback))
        return others

    def _notify(self, srv: MonitoredItemService, handle: int, value: ua.DataValue) -> None:
        """MonitoredItemService.datachange_callback without the deepcopy and the awaits."""
        mid = srv._monitored_datachange[handle]
        mdata = srv._monitored_items[mid]
        if mdata.mode == _DISABLED:
            return
        mv = mdata.mvalue
        mv.old_dvalue = mv.current_dvalue
        mv.current_dvalue = value  # the writer never mutates it: no copy needed
        flt = mdata.filter
        if flt:
            passed = srv._is_data_changed(mv, flt.Trigger) and srv._is_deadband_exceeded(mv, flt)
        else:
            passed = srv._is_data_changed(mv, _STATUS_VALUE)
        if not passed:
            return
        isub = srv.isub
        if isub.pub_request_callback is not None:
            if type(isub) is InternalSubscription:
                # A client's subscription: the same object, with the fast encoder of its
                # notifications (EncodedSubscription adds no state, only that method).
                isub.__class__ = EncodedSubscription
            note = ua.MonitoredItemNotification(ClientHandle=mdata.client_handle, Value=value)
        else:
            # An in-process subscriber would hold the very object: it gets its own copy.
            note = ua.MonitoredItemNotification(ClientHandle=mdata.client_handle,
                                                Value=copy.deepcopy(value))
        queue = isub._triggered_datachanges
        items = queue.get(mid)
        if items is None:
            queue[mid] = [note]
            if isub._task is None and isub.data.RevisedPublishingInterval <= 0.0:
                self._pending.add(isub)  # published at once, as asyncua does
            return
        size = mdata.queue_size
        if size != 0 and len(items) >= size:
            items.pop(0)
        items.append(note)

    async def _flush_triggers(self) -> None:
        """Publish subscriptions without a publishing loop (interval 0) that got a value."""
        if not self._pending:
            return
        pending, self._pending = self._pending, set()
        for isub in pending:
            await isub._trigger_publish()

    async def _call(self, handle: int, callback: Any, value: ua.DataValue) -> None:
        try:
            await callback(handle, value)
        except Exception as ex:
            log.exception("Error calling datachange callback %s, %s, %s", handle, callback, ex)


class _Latest:
    """The latest reading of every row of one tag table, and which rows' variables are
    read from it (their Value attribute's read callback is installed)."""

    def __init__(self, n: int) -> None:
        self.values = np.full(n, np.nan)
        self.times = np.zeros(n)
        self.flags = np.zeros(n, np.uint8)
        self.server_s = np.zeros(n)
        self.served = bytearray(n)  # 1: reads of the row's variable come from these arrays

    def read(self, row: int, _nid: ua.NodeId, _attr: object) -> ua.DataValue:
        """The row's variable as a Read (or a new monitored item's first value) sees it."""
        value = float(self.values[row])
        status = value_status(value, status_of(DataFlag(int(self.flags[row]))))
        # Part 4, 7.7.1: a Bad value is null (as ValueWriter writes it).
        return ua.DataValue(
            _NULL if status.is_bad() else double_variant(value), status,
            SourceTimestamp=cast("ua.DateTime", datetime.fromtimestamp(self.times[row], UTC)),
            ServerTimestamp=cast("ua.DateTime",
                                 datetime.fromtimestamp(self.server_s[row], UTC)))


class SampleWriter:
    """Writes the latest reading of each raw tag of a SampleBlock through a ValueWriter.

    The slot of each row of a tag table is resolved once per table (None for a tag with
    no variable in this server), so that a block costs a numpy pass and one DataValue per
    watched tag, with one datetime per distinct poll time.

    Only the variables some monitored item watches are written (and notified) per block.
    The others, most of 100 000 raw tags, keep their latest reading in numpy arrays
    (_Latest), and their Value attribute answers a Read, or a new monitored item's first
    value, from there through asyncua's read callback: a DataValue per reading for every
    tag cost the event loop most of a core at 100 000 readings/s (bench/test_whole_path.py),
    for values nobody was looking at. A variable that gets a monitored item is written from
    the next block on (which drops the callback); one that loses it is served again.
    """

    def __init__(self, writer: ValueWriter, tags: Mapping[str, ua.NodeId]) -> None:
        self._writer = writer
        self._tags = tags
        self._tables: dict[int, tuple[TagTable, list[_Slot | None], _Latest]] = {}

    def _table(self, table: TagTable) -> tuple[list[_Slot | None], _Latest]:
        cached = self._tables.get(id(table))
        if cached is not None and cached[0] is table:
            return cached[1], cached[2]
        slots = [self._writer.slot(nid) if (nid := self._tags.get(tag)) is not None else None
                 for tag in table.ids]
        latest = _Latest(len(slots))
        self._tables[id(table)] = (table, slots, latest)
        return slots, latest

    def row_slots(self, table: TagTable) -> list[_Slot | None]:
        """The slot of every row of `table` (cached for the table's life)."""
        return self._table(table)[0]

    async def write(self, block: SampleBlock, server_time: ua.DateTime) -> None:
        """The last reading of each tag in the block; tags without a variable are ignored.

        The event loop is held for one chunk of _YIELD_EVERY values at a time (building
        their DataValues and notifying), and a big block's numpy selection runs in a thread.
        """
        if len(block) == 0:
            return
        row_slots, latest = self._table(block.table)
        if len(block) > _THREAD_ROWS:
            at = await asyncio.to_thread(_latest, block)
        else:
            at = _latest(block)
        r = block.rows[at]
        latest.values[r] = block.values[at]
        latest.times[r] = block.times[at]
        latest.flags[r] = block.flags[at]
        latest.server_s[r] = server_time.timestamp()
        # Which of them are watched: a dict's truth per row, far cheaper than a DataValue.
        served = latest.served
        watched: list[int] = []
        for i, row in enumerate(r.tolist()):
            if i and i % _CLASSIFY_EVERY == 0:
                await asyncio.sleep(0)  # a block of 100 000 rows does not hold the loop
            slot = row_slots[row]
            if slot is None:
                continue
            if slot.attval.datachange_callbacks:
                watched.append(i)
                served[row] = 0  # the write below drops the read callback
            elif not served[row]:
                slot.attval.value_callback = functools.partial(latest.read, row)
                served[row] = 1
        if not watched:
            return
        w = at[watched]
        rows, times = block.rows[w].tolist(), block.times[w].tolist()
        values, flags = block.values[w].tolist(), block.flags[w].tolist()
        stamps: dict[float, ua.DateTime] = {}
        statuses: dict[int, ua.StatusCode] = {}
        data_value = ua.DataValue
        writer = self._writer
        for start in range(0, len(rows), _YIELD_EVERY):
            end = start + _YIELD_EVERY
            if start:
                await asyncio.sleep(0)  # other tasks run between two chunks
            items: list[tuple[_Slot, ua.DataValue]] = []
            for row, t, value, flag in zip(rows[start:end], times[start:end],
                                           values[start:end], flags[start:end], strict=True):
                slot = row_slots[row]
                assert slot is not None  # watched rows have one
                stamp = stamps.get(t)
                if stamp is None:
                    stamp = stamps[t] = cast("ua.DateTime", datetime.fromtimestamp(t, UTC))
                status = statuses.get(flag)
                if status is None:
                    status = statuses[flag] = status_of(DataFlag(flag))
                if value != value:  # NaN: no value, never Good (layout.value_status)
                    status = value_status(value, status)
                items.append((slot, data_value(double_variant(value), status,
                                               SourceTimestamp=stamp,
                                               ServerTimestamp=server_time)))
            await writer.write_many(items)


# Rows looked at between two yields to the event loop (about 0.3 µs each when not watched).
_CLASSIFY_EVERY = 5_000
# Above this many readings, the selection of each tag's latest reading runs in a thread.
_THREAD_ROWS = 50_000


def _latest(block: SampleBlock) -> npt.NDArray[np.intp]:
    """Where in the block the last reading of each of its tags is."""
    # The last reading of each tag: first occurrences in the reversed block.
    _, last = np.unique(block.rows[::-1], return_index=True)
    at: npt.NDArray[np.intp] = len(block.rows) - 1 - last
    return at


_new_variant = object.__new__


def double_variant(value: float) -> ua.Variant:
    """ua.Variant(value, VariantType.Double) for a float, without its __post_init__ checks
    (type guessing, array detection: a fifth of a value write's time)."""
    var = _new_variant(ua.Variant)
    var.Value = value
    var.VariantType = _DOUBLE
    var.Dimensions = None
    var.is_array = False
    return var
