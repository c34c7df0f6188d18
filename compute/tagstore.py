"""Per-tag sample buffers (numpy) from which each minute's window is taken."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class Window:
    """The samples of every tag within one minute, padded to a rectangle."""

    values: npt.NDArray[np.float64]  # (tags, max samples)
    flags: npt.NDArray[np.uint8]
    times: npt.NDArray[np.float64]  # epoch seconds
    counts: npt.NDArray[np.int64]  # samples of each tag


class TagStore:
    """Holds the not-yet-calculated samples of every tag in arrival order.

    Each tag has a fixed capacity; when a tag overflows (the minute cycle stalled
    for far longer than a minute) its oldest samples are dropped and counted.
    """

    def __init__(self, tag_ids: Sequence[str], capacity: int) -> None:
        self.index = {tag: i for i, tag in enumerate(tag_ids)}
        n = len(tag_ids)
        self._cap = max(int(capacity), 4)
        self._t = np.zeros((n, self._cap), np.float64)
        self._v = np.zeros((n, self._cap), np.float64)
        self._f = np.zeros((n, self._cap), np.uint8)
        self._n = np.zeros(n, np.int64)
        self.overflowed = 0
        self.late = 0  # samples that arrived after their minute was calculated

    def append(self, tag: int, t: float, value: float, flag: int) -> None:
        """Add one sample of tag index `tag` (epoch seconds, value, flag integer)."""
        k = self._n[tag]
        if k == self._cap:
            half = self._cap // 2
            for arr in (self._t, self._v, self._f):
                arr[tag, : self._cap - half] = arr[tag, half:]
            self.overflowed += half
            k -= half
        self._t[tag, k] = t
        self._v[tag, k] = value
        self._f[tag, k] = flag
        self._n[tag] = k + 1

    def take(self, start: float, end: float) -> Window:
        """Remove and return every sample with `t < end`; those with `t < start` are late."""
        n_tags = len(self._n)
        cut = np.empty(n_tags, np.int64)
        first = np.empty(n_tags, np.int64)
        for i in range(n_tags):
            ts = self._t[i, : self._n[i]]
            cut[i] = np.searchsorted(ts, end, side="left")
            first[i] = np.searchsorted(ts[: cut[i]], start, side="left")
        counts = cut - first
        width = int(counts.max(initial=0))
        values = np.full((n_tags, max(width, 1)), np.nan)
        flags = np.zeros((n_tags, max(width, 1)), np.uint8)
        times = np.zeros((n_tags, max(width, 1)), np.float64)
        for i in range(n_tags):
            a, b = first[i], cut[i]
            values[i, : b - a] = self._v[i, a:b]
            flags[i, : b - a] = self._f[i, a:b]
            times[i, : b - a] = self._t[i, a:b]
            rest = self._n[i] - b
            for arr in (self._t, self._v, self._f):
                arr[i, :rest] = arr[i, b : self._n[i]]
            self._n[i] = rest
        self.late += int(first.sum())
        return Window(values, flags, times, counts)
