"""The tag store: ring buffers of not-yet-calculated samples, one ring per poll group.

A poll group is the tags one poll reads together (a device's tags, consecutive rows of
the plant's tag table): they share one timestamp per poll, so a ring slot holds one
time and a row of values and flags. Appending a block writes one slot (no shifting);
taking a minute is one compiled call over every ring, which releases the GIL so that the
minute cycle can take it from a worker thread while the drivers keep appending.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numba import njit

from model.errors import InvalidValueError
from model.flags import DataFlag
from model.records import SampleBlock

F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]

_B = int(DataFlag.B)


@dataclass(frozen=True, slots=True)
class Window:
    """The samples of every tag within one minute, padded to a rectangle."""

    values: npt.NDArray[np.float64]  # (tags, max samples)
    flags: npt.NDArray[np.uint8]
    times: npt.NDArray[np.float64]  # epoch seconds
    counts: npt.NDArray[np.int64]  # samples of each tag


# Ring state per group, columns of one int64 matrix so that a kernel gets it in one array.
_HEAD, _LEN, _FIRST, _SIZE = 0, 1, 2, 3


@njit(nogil=True, cache=True)
def _append(state: I64, group_of: I32, cap: int, ring_t: F64, ring_v: F64, ring_f: U8,
            last_t: F64, rows: I32, t_in: F64, v_in: F64, f_in: U8) -> int:  # pragma: no cover
    """Write readings into their groups' rings; returns how many samples were overwritten.

    A reading opens a new slot of its group unless the group's newest slot has its time
    (the rest of the same poll). A new slot starts NaN / B for every tag of the group: a
    tag a poll did not read is a reading not made, never the previous one repeated.
    """
    dropped = 0
    for k in range(rows.shape[0]):
        r = rows[k]
        g = group_of[r]
        t = t_in[k]
        head, length = state[g, _HEAD], state[g, _LEN]
        newest = (head + length - 1) % cap
        if length == 0 or ring_t[g, newest] != t:
            if length == cap:  # full: the oldest slot goes
                head = (head + 1) % cap
                state[g, _HEAD] = head
                length -= 1
                dropped += state[g, _SIZE]
            newest = (head + length) % cap
            state[g, _LEN] = length + 1
            ring_t[g, newest] = t
            first = state[g, _FIRST]
            for j in range(first, first + state[g, _SIZE]):
                ring_v[j, newest] = np.nan
                ring_f[j, newest] = _B
            if t > last_t[g]:
                last_t[g] = t
        ring_v[r, newest] = v_in[k]
        ring_f[r, newest] = f_in[k]
    return dropped


@njit(nogil=True, cache=True)
def _extent(state: I64, cap: int, ring_t: F64, start: float, end: float,
            skip: I64, cut: I64) -> int:  # pragma: no cover - compiled
    """Per group, the slots older than `start` (skip) and those older than `end` (cut);
    returns the window's width (the most slots of one group in [start, end), at least 1)."""
    width = 1
    for g in range(state.shape[0]):
        head, length = state[g, _HEAD], state[g, _LEN]
        k = 0
        while k < length and ring_t[g, (head + k) % cap] < start:
            k += 1
        skip[g] = k
        while k < length and ring_t[g, (head + k) % cap] < end:
            k += 1
        cut[g] = k
        width = max(width, k - skip[g])
    return width


@njit(nogil=True, cache=True)
def _take(state: I64, cap: int, ring_t: F64, ring_v: F64, ring_f: U8, skip: I64, cut: I64,
          values: F64, flags: U8, times: F64, counts: I64, now_t: F64, now_v: F64,
          now_f: U8) -> int:  # pragma: no cover
    """Remove every slot before `cut`, filling the window with those from `skip` on;
    returns the count of samples before `skip` (late: their minute was taken already).

    The last slot removed of each group is kept in (now_t, now_v, now_f): the newest
    reading of its tags while the ring is empty (TagStore.newest).

    Rings are (tag, slot): a tag's samples are one or two contiguous runs, so the window
    is filled row by row, not by a transpose."""
    n_groups = state.shape[0]
    width = values.shape[1]
    late = 0
    for g in range(n_groups):
        head, first, size = state[g, _HEAD], state[g, _FIRST], state[g, _SIZE]
        n = cut[g] - skip[g]
        s0 = (head + skip[g]) % cap
        # Plain index loops: numba's slice assignment costs more than these 60 copies.
        for r in range(first, first + size):
            slot = s0
            for k in range(n):
                values[r, k] = ring_v[r, slot]
                flags[r, k] = ring_f[r, slot]
                times[r, k] = ring_t[g, slot]
                slot += 1
                if slot == cap:
                    slot = 0
            for k in range(n, width):
                values[r, k] = np.nan
                flags[r, k] = 0
                times[r, k] = 0.0
            counts[r] = n
        if cut[g] > 0:
            last = (head + cut[g] - 1) % cap
            for r in range(first, first + size):
                now_t[r] = ring_t[g, last]
                now_v[r] = ring_v[r, last]
                now_f[r] = ring_f[r, last]
        late += skip[g] * size
        state[g, _HEAD] = (head + cut[g]) % cap
        state[g, _LEN] -= cut[g]
    return late


class TagStore:
    """Holds the not-yet-calculated samples of every tag, a ring buffer per poll group.

    `groups` gives the number of tags of each group, in row order (a device's tags are
    consecutive rows of the tag table); by default every tag is its own group. Each ring
    holds `capacity` polls; when one overflows (the minute cycle stalled for far longer
    than a minute) its oldest poll is dropped and its samples counted in `overflowed`.
    """

    def __init__(self, tag_ids: Sequence[str], capacity: int,
                 groups: Sequence[int] | None = None) -> None:
        self.index = {tag: i for i, tag in enumerate(tag_ids)}
        n = len(tag_ids)
        sizes = [1] * n if groups is None else list(groups)
        if sum(sizes) != n or any(s < 1 for s in sizes):
            raise InvalidValueError(f"tag store groups {sizes} do not partition {n} tags")
        self._cap = max(int(capacity), 4)
        g = len(sizes)
        self._state = np.zeros((g, 4), np.int64)
        self._state[:, _SIZE] = sizes
        self._state[:, _FIRST] = np.cumsum([0, *sizes[:-1]]) if sizes else []
        self._group_of = np.repeat(np.arange(g, dtype=np.int32), sizes).astype(np.int32)
        self._t = np.zeros((g, self._cap), np.float64)
        # (tag, slot): a block's write is strided, a minute's take is row copies.
        self._v = np.zeros((n, self._cap), np.float64)
        self._f = np.zeros((n, self._cap), np.uint8)
        self._last_t = np.full(g, -np.inf)
        # The newest reading of each tag as the last take left it: -inf, NaN, B before.
        self._now_t = np.full(n, -np.inf)
        self._now_v = np.full(n, np.nan)
        self._now_f = np.full(n, _B, np.uint8)
        self._lock = threading.Lock()
        self._pending: list[SampleBlock] = []  # appended while a take held the rings
        self.overflowed = 0
        self.late = 0  # samples that arrived after their minute was calculated

    @property
    def nbytes(self) -> int:
        """Bytes the rings occupy."""
        return (self._t.nbytes + self._v.nbytes + self._f.nbytes + self._state.nbytes
                + self._now_t.nbytes + self._now_v.nbytes + self._now_f.nbytes)

    def append(self, tag: int, t: float, value: float, flag: int) -> None:
        """Add one sample of tag index `tag` (epoch seconds, value, flag integer)."""
        self._write(np.array([tag], np.int32), np.array([t]), np.array([value]),
                    np.array([flag], np.uint8))

    def append_block(self, block: SampleBlock) -> None:
        """Add a block whose rows are this store's rows (never blocks on a running take)."""
        if not self._lock.acquire(blocking=False):
            # A take copies the rings in a worker thread: keep the block for the next
            # append rather than stall the event loop. Its samples are newer than the
            # minute being taken (the minute closes once every group polled past it).
            self._pending.append(block)
            return
        try:
            self._flush_pending()
            self._write_locked(block.rows, block.times, block.values, block.flags)
        finally:
            self._lock.release()

    def _write(self, rows: I32, times: F64, values: F64, flags: U8) -> None:
        with self._lock:
            self._flush_pending()
            self._write_locked(rows, times, values, flags)

    def _flush_pending(self) -> None:
        pending, self._pending = self._pending, []
        for b in pending:
            self._write_locked(b.rows, b.times, b.values, b.flags)

    def _write_locked(self, rows: I32, times: F64, values: F64, flags: U8) -> None:
        self.overflowed += _append(self._state, self._group_of, self._cap, self._t, self._v,
                                   self._f, self._last_t, rows.astype(np.int32, copy=False),
                                   times.astype(np.float64, copy=False),
                                   values.astype(np.float64, copy=False),
                                   flags.astype(np.uint8, copy=False))

    def newest(self, start: int, stop: int) -> tuple[F64, F64, U8]:
        """The newest time (epoch s, -inf: none yet), value and flag of rows start..stop-1
        (a device's tags), as new arrays, without waiting for a running take."""
        # The newest slot of each row's ring, or what the last take kept of a ring it
        # emptied: nothing on the append path, which runs thousands of times a second.
        # No lock (a take holds it for the whole minute's copy); the event loop, which
        # calls this, is the only writer besides a take's flush of held-back polls.
        g = self._group_of[start:stop]
        length = self._state[g, _LEN]
        slot = (self._state[g, _HEAD] + length - 1) % self._cap
        rows = np.arange(start, stop)
        kept = length == 0
        return (np.where(kept, self._now_t[start:stop], self._t[g, slot]),
                np.where(kept, self._now_v[start:stop], self._v[rows, slot]),
                np.where(kept, self._now_f[start:stop], self._f[rows, slot]).astype(np.uint8))

    def polled_past(self, t: float) -> bool:
        """Whether every group has a poll stamped at or after `t` (epoch seconds)."""
        return bool(self._last_t.min(initial=np.inf) >= t)

    def take(self, start: float, end: float) -> Window:
        """Remove and return every sample with `t < end`; those with `t < start` are late."""
        with self._lock:
            self._flush_pending()
            g = len(self._state)
            skip, cut = np.empty(g, np.int64), np.empty(g, np.int64)
            width = _extent(self._state, self._cap, self._t, start, end, skip, cut)
            # Allocated by numpy, not inside the kernel: numpy asks the kernel for huge
            # pages on big arrays, and a minute's window is hundreds of MB at 100k
            # sources, where first-touch page faults cost more than the copying.
            n = self._v.shape[0]
            values, flags = np.empty((n, width)), np.empty((n, width), np.uint8)
            times, counts = np.empty((n, width)), np.empty(n, np.int64)
            late = _take(self._state, self._cap, self._t, self._v, self._f, skip, cut,
                         values, flags, times, counts, self._now_t, self._now_v, self._now_f)
        self.late += late
        return Window(values, flags, times, counts)


def warm_up() -> None:
    """Compile (or load from the on-disk cache) the store's kernels on a tiny store."""
    store = TagStore(["a", "b"], 4, groups=[2])
    store.append(0, 1.0, 1.0, 0)
    store.take(0.0, 2.0)
