"""Automatic zero and span checks (HJ 75-2017): recorded from the analyser's own calibration.

A CEMS analyser calibrates by itself once a day and its data logger exposes that as a status
register (non-zero while calibrating, or a phase code: zero gas on, span gas on) beside its
reading. A source's `qa.auto` describes each such check (compute/qa.py AutoCheck). This sink
sees the raw samples the runtime hands every sink, keeps those of the status and reading
tags while a check runs, and at each falling edge of the status records the check through
the record keeper, as a person entering it would (user "system"): the keeper judges it
against the source's limits and opens or closes the out-of-control interval.

Nothing here runs in the ingest path: the runtime queues blocks to this sink as to any
other (server/sinks.py), and each entry is made in a task of its own, so that the
recalculation an entry may start never holds the samples. A refused entry is logged with
the keeper's message; any other failure is logged once per kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from compute import qa
from compute.config import CalculationConfig
from model.errors import InvalidValueError
from model.flags import DataFlag
from model.records import MinuteResult, SampleBlock

log = logging.getLogger(__name__)

Enter = Callable[[str, Any], Awaitable[dict[str, Any]]]
"""The record keeper's `enter(user, body)` (server/records.py)."""

USER: Final = "system"
# A check's readings may come from another device than its status, polled a little later:
# an episode is recorded once a reading after its edge arrived, or this long after it.
READING_GRACE_S: Final = 5.0
_VALID = int(DataFlag.N)
F64 = npt.NDArray[np.float64]
_EMPTY: F64 = np.empty(0, np.float64)


def auto_checks(cfg: CalculationConfig) -> list[tuple[str, str, qa.AutoCheck]]:
    """(source id, status tag, check) of every automatic check of the plant."""
    return [(src.id, src.qa.status_tag(a), a) for _, src in cfg.sources()
            if src.qa is not None for a in src.qa.auto]


def iso(t: float) -> str:
    """An epoch second as UTC ISO 8601."""
    return datetime.fromtimestamp(t, UTC).isoformat()


def entry_body(source: str, status_tag: str, auto: qa.AutoCheck,
               episode: qa.CalibrationEpisode) -> dict[str, Any]:
    """The qa_check entry an episode records (server/records.py QaCheckIn)."""
    c = qa.auto_check(source, auto, episode)
    return {"kind": "qa_check", "source": source, "t": c.t.isoformat(), "check": c.kind,
            "parameter": c.parameter, "reference_value": c.reference_value,
            "measured_value": c.measured_value, "full_scale": c.full_scale, "unit": c.unit,
            "document": f"auto: {status_tag} {iso(episode.t0)}–{iso(episode.t1)}",
            "reason": f"automatic {c.kind} check: mean of {episode.n} readings of "
                      f"{auto.reading_tag} over the last {auto.average_s:g} s of the phase"}


class CheckWatch:
    """The samples of one automatic check's status and reading tags while it runs."""

    def __init__(self, source: str, status_tag: str, auto: qa.AutoCheck) -> None:
        self.source = source
        self.status_tag = status_tag
        self.auto = auto
        self._st, self._sv, self._rt, self._rv = _EMPTY, _EMPTY, _EMPTY, _EMPTY
        self._done_until = -np.inf  # the edge of the last episode handed out
        self._running: float | None = None  # the start of the phase running, none held

    @property
    def active(self) -> bool:
        """Whether a check runs (or its last readings are awaited)."""
        return bool(self._st.size)

    def add(self, status_t: F64, status_v: F64, reading_t: F64, reading_v: F64,
            ) -> list[qa.CalibrationEpisode]:
        """Take valid samples (time order); the episodes that finished, oldest first."""
        a = self.auto
        if not self._st.size and not qa.in_phase(status_v, a.phase_value).any():
            return []  # idle, and still no check: the common case, no buffer kept
        if self._running is not None and qa.in_phase(status_v, a.phase_value).all():
            # Still in the phase: only the newest status and the last average_s of readings.
            if status_t.size and self._st.size > 1:  # [start, newest]: the newest moves
                self._st[-1], self._sv[-1] = status_t[-1], status_v[-1]
            elif status_t.size:  # [start] only: the newest joins it
                self._st = np.append(self._st, status_t[-1])
                self._sv = np.append(self._sv, status_v[-1])
            self._rt = np.concatenate([self._rt, reading_t])
            self._rv = np.concatenate([self._rv, reading_v])
            keep = self._rt >= max(self._running, float(self._st[-1]) - a.average_s)
            if not keep.all():
                self._rt, self._rv = self._rt[keep], self._rv[keep]
            return []
        self._st = np.concatenate([self._st, status_t])
        self._sv = np.concatenate([self._sv, status_v])
        self._rt = np.concatenate([self._rt, reading_t])
        self._rv = np.concatenate([self._rv, reading_v])
        if not self._st.size:
            self._rt, self._rv = _EMPTY, _EMPTY
            return []
        episodes, running = qa.calibration_episodes(
            self._st, self._sv, self._rt, self._rv, phase_value=a.phase_value,
            average_s=a.average_s, min_samples=a.min_samples)
        status_last = float(self._st[-1])
        reading_last = float(self._rt[-1]) if self._rt.size else -np.inf
        finished: list[qa.CalibrationEpisode] = []
        held: float | None = None
        for ep in episodes:
            if ep.t1 <= self._done_until:
                continue
            if reading_last < ep.t1 and status_last < ep.t1 + READING_GRACE_S:
                held = ep.t0  # its last readings may still be on their way
                break
            self._done_until = ep.t1
            finished.append(ep)
        self._trim(held, running, status_last)
        # The fast path above needs the buffer as _trim leaves a running phase: its first
        # and newest status samples (two, or one when they are the same).
        self._running = running if held is None and running is not None else None
        return finished

    def _trim(self, held: float | None, running: float | None, status_last: float) -> None:
        """Keep only what an episode not handed out yet can still need."""
        if held is not None:  # everything from the held episode on
            s, r = self._st >= held, self._rt >= held
        elif running is not None:
            # A running phase needs its first status sample (its start) and the newest, and
            # readings of the last average_s: its edge comes after the newest status sample.
            s = (self._st == running) | (self._st == status_last)
            r = self._rt >= max(running, status_last - self.auto.average_s)
        else:
            self._st, self._sv, self._rt, self._rv = _EMPTY, _EMPTY, _EMPTY, _EMPTY
            return
        self._st, self._sv = self._st[s], self._sv[s]
        self._rt, self._rv = self._rt[r], self._rv[r]


class QaCapture:
    """A sink: records each finished automatic zero or span check of the plant."""

    name = "qa-capture"

    def __init__(self, cfg: CalculationConfig, enter: Enter) -> None:
        self.watches = [CheckWatch(s, tag, a) for s, tag, a in auto_checks(cfg)]
        self._enter = enter
        # Built at the first block, from its table: (status row, reading row) per watch, and
        # whether each row of the table is one of theirs.
        self._rows: list[tuple[int, int]] = []
        self._interest: npt.NDArray[np.bool_] | None = None
        self._by_status: dict[int, list[int]] = {}  # status row → its watches
        self._active: set[int] = set()  # the watches with a check running (or held)
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_error = ""
        self.recorded: list[dict[str, Any]] = []  # what the keeper answered, oldest first
        self.refused: list[str] = []

    async def start(self) -> None:
        """Nothing to open."""

    async def on_minute(self, result: MinuteResult) -> None:
        """Minutes are not its concern."""

    async def on_samples(self, block: SampleBlock) -> None:
        """Hand each watch its tags' valid samples; record the checks that finished."""
        try:
            self._take(block)
        except Exception as exc:  # a fault here must not end the sink, nor repeat per block
            self._log_once(f"{type(exc).__name__}: {exc}")

    def _take(self, block: SampleBlock) -> None:
        if self._interest is None:
            index = block.table.index
            self._rows = [(index[w.status_tag], index[w.auto.reading_tag])
                          for w in self.watches]
            self._interest = np.zeros(len(block.table), np.bool_)
            self._interest[[r for pair in self._rows for r in pair]] = True
            for i, (srow, _) in enumerate(self._rows):
                self._by_status.setdefault(srow, []).append(i)
        # The few readings of the watched tags, valid ones only, grouped by row (stable:
        # each row's readings stay in time order); then a slice per row.
        sel = self._interest[block.rows] & (block.flags == _VALID)
        if not sel.any():
            return
        order = np.argsort(block.rows[sel], kind="stable")
        rows = block.rows[sel][order]
        times, values = block.times[sel][order], block.values[sel][order]
        present, first, n = np.unique(rows, return_index=True, return_counts=True)
        # Only the watches whose status reads non-zero in this batch, or that run: the
        # others are idle and stay so (phase codes are non-zero), at no cost per watch.
        nonzero = np.logical_or.reduceat((values != 0.0) & np.isfinite(values), first)
        todo = set(self._active)
        for row in present[nonzero].tolist():
            todo.update(self._by_status.get(row, ()))
        if not todo:
            return

        def of(row: int) -> tuple[F64, F64]:
            k = int(np.searchsorted(present, row))
            if k == present.size or present[k] != row:
                return _EMPTY, _EMPTY
            a, b = int(first[k]), int(first[k] + n[k])
            return times[a:b], values[a:b]

        for i in sorted(todo):
            w = self.watches[i]
            srow, rrow = self._rows[i]
            for ep in w.add(*of(srow), *of(rrow)):
                self._record(w, ep)
            if w.active:
                self._active.add(i)
            else:
                self._active.discard(i)

    def _record(self, w: CheckWatch, ep: qa.CalibrationEpisode) -> None:
        a = w.auto
        try:
            body = entry_body(w.source, w.status_tag, a, ep)
        except InvalidValueError as exc:  # too few readings on the gas: no check to record
            log.warning("%s: not recorded", exc)
            return
        task = asyncio.create_task(self._enter_one(body), name=f"qa-capture:{w.source}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _enter_one(self, body: dict[str, Any]) -> None:
        what = (f"automatic {body['check']} check of {body['source']!r} {body['parameter']} "
                f"at {body['t']}")
        try:
            answer = await self._enter(USER, body)
        except InvalidValueError as exc:  # the keeper refused it (a locked period, ...)
            log.warning("%s refused: %s", what, exc)
            self.refused.append(str(exc))
            return
        except Exception as exc:  # not recorded; the next check is tried all the same
            self._log_once(f"{type(exc).__name__}: {exc}", f" ({what} not recorded)")
            return
        self.recorded.append(answer)
        result = answer.get("entry", {}).get("result", {})
        log.info("%s recorded: measured %g against %g %s, drift %.2f %% F.S., %s", what,
                 body["measured_value"], body["reference_value"], body["unit"],
                 result.get("drift_pct_fs", float("nan")), result.get("status", "?"))

    def _log_once(self, text: str, context: str = "") -> None:
        """Log a fault when it differs from the last one (not once a block or a check)."""
        if text != self._last_error:
            log.error("automatic QA checks: %s%s", text, context)
            self._last_error = text

    async def stop(self) -> None:
        """Let the entries under way finish (briefly), then cancel what is left."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
