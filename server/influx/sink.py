"""InfluxDB sink: results and raw samples as line protocol, sent through a durable outbox.

Lines are built in bulk by the small functions below, collected in memory and written
as batches to a SQLite outbox; a sender task posts the outbox oldest first (gzip, level 1,
compressed in the outbox's worker thread; uncompressed to a server on this machine,
where compressing costs both sides more than it saves) to any server of the InfluxDB v2
write API and deletes a batch only once the server took it; the next batch is read while
one is in flight. Batches survive a restart.

What waits in memory for the next flush is lost by a kill -9, so the outbox keeps a
high-water mark, written in the same transaction as each batch: the last minute whose
results (and the raw samples it was calculated from, which arrive before it) are all in
the outbox. On start, the minutes the historian stored after that mark are refilled from
the historian: what the historian has stored is what InfluxDB gets.

During a long outage the outbox is capped in size and age: a warning first, then the
oldest batches are dropped, with an error saying what was dropped (batches, lines, time
range), also kept in the outbox's `dropped` table; and a system alarm in the alarm list
(server/influx/alarm.py) from the warning until the outbox is back to half of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import ipaddress
import logging
import math
import os
import sqlite3
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException
from influxdb_client.service.write_service import WriteService

from model.flags import DataFlag
from model.records import MinuteResult, RawWindow, RevisedMinutes, Sample, SampleBlock
from server.influx.alarm import OnDeviceEvent, OutboxAlarm
from server.influx.config import InfluxConfig
from server.influx.lines import block_lines, minute_lines, revised_lines, source_count

log = logging.getLogger(__name__)

T = TypeVar("T")
FieldValue = float | int | bool

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# Line-protocol escapes (docs.influxdata.com, "Line protocol" → "Special characters").
# Raw newlines would end the line, so they are written as the two characters \n.
_ESCAPE_MEASUREMENT = str.maketrans(
    {",": r"\,", " ": r"\ ", "\n": r"\n", "\r": r"\r", "\t": r"\t"})
_ESCAPE_KEY = str.maketrans(
    {",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\r": r"\r", "\t": r"\t"})

_BACKOFF_FIRST_S = 1.0
_BACKOFF_MAX_S = 60.0
_HTTP_TIMEOUT_MS = 30_000
_STOP_SEND_TIMEOUT_S = 5.0
# The server read the batch and will never take it: retrying cannot help, so it is
# moved to the `rejected` table (kept for inspection) instead of blocking the outbox.
_PERMANENT_REJECTIONS = frozenset({400, 413, 422})
# The generated client declares WritePrecision's members as plain strings.
_NS = cast(WritePrecision, WritePrecision.NS)
# Level 1: several times faster than the default 9 for line protocol, nearly as small.
_GZIP_LEVEL = 1
# Blocks from this size on are turned into lines in a worker thread (about 2 ms of work).
_THREAD_MIN_READINGS = 4000
_THREAD_MIN_SOURCES = 300  # and minutes from this many sources on
# Batches the flush stores in one transaction at most (each commit is an fsync).
_BATCHES_PER_STORE = 20
# High-water mark before anything was ever stored: every stored minute is owed.
_HWM_NONE = -(2**62)
_FLAGS = {int(f): f for f in DataFlag}


def escape_measurement(name: str) -> str:
    """Escape a measurement name (comma, space)."""
    return name.translate(_ESCAPE_MEASUREMENT)


def escape_key(text: str) -> str:
    """Escape a tag key, tag value or field key (comma, equals sign, space)."""
    out = text.translate(_ESCAPE_KEY)
    # A trailing backslash would escape the separator that follows it.
    return out + " " if out.endswith("\\") else out


def format_field(value: FieldValue) -> str | None:
    """A field value in line-protocol syntax; None for NaN and ±inf, which it cannot hold."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if not math.isfinite(value):
        return None
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def timestamp_ns(t: datetime) -> int:
    """Nanoseconds since the Unix epoch of an aware datetime (exact, no float rounding)."""
    return (t - _EPOCH) // _MICROSECOND * 1000


def line(measurement: str, tags: Mapping[str, str], fields: Mapping[str, FieldValue],
         t_ns: int) -> str | None:
    """One line of line protocol; empty tag values are left out, None if no field is left."""
    field_text = []
    for key, value in fields.items():
        text = format_field(value)
        if text is not None:
            field_text.append(f"{escape_key(key)}={text}")
    if not field_text:
        return None
    head = escape_measurement(measurement) + "".join(
        f",{escape_key(k)}={escape_key(v)}" for k, v in tags.items() if v)
    return f"{head} {','.join(field_text)} {t_ns}"


def result_lines(result: MinuteResult, site: str) -> list[str]:
    """Lines of one minute's results: co2_source, co2_unit and co2_site."""
    out: list[str | None] = []
    for s in result.sources:
        out.append(line(
            "co2_source",
            {"site": site, "unit": s.unit, "source": s.source, "flag": s.flag.name},
            {"flow_act_m3_h": s.flow_act_m3_h, "flow_std_dry_m3_h": s.flow_std_dry_m3_h,
             "co2_dry_pct": s.co2_dry_pct, "co2_mg_m3": s.co2_mg_m3,
             "co2_rate_kg_h": s.co2_rate_kg_h, "co2_kg": s.co2_kg,
             "co2_hour_t": s.co2_hour_t, "co2_today_t": s.co2_today_t,
             "co2_ytd_t": s.co2_ytd_t, "valid": s.valid},
            timestamp_ns(s.t)))
    for u in result.units:
        out.append(line(
            "co2_unit",
            {"site": site, "unit": u.unit, "flag": u.flag.name},
            {"output_mwh": u.output_mwh, "co2_kg": u.co2_kg,
             "intensity_t_mwh": u.intensity_t_mwh, "co2_today_t": u.co2_today_t,
             "output_today_mwh": u.output_today_mwh,
             "intensity_today_t_mwh": u.intensity_today_t_mwh, "co2_ytd_t": u.co2_ytd_t,
             "valid": u.valid},
            timestamp_ns(u.t)))
    st = result.site
    out.append(line(
        "co2_site",
        {"site": site},
        {"co2_kg": st.co2_kg, "co2_today_t": st.co2_today_t, "co2_ytd_t": st.co2_ytd_t,
         "allowance_annual_t": st.allowance_annual_t,
         "allowance_used_pct": st.allowance_used_pct,
         "allowance_headroom_t": st.allowance_headroom_t},
        timestamp_ns(st.t)))
    return [x for x in out if x is not None]


def window_samples(raw: RawWindow) -> list[Sample]:
    """The samples of a stored raw window (tag after tag), as the drivers produced them."""
    out: list[Sample] = []
    offset = 0
    for tag, n in zip(raw.tags, raw.counts.tolist(), strict=True):
        times = raw.times[offset:offset + n].tolist()
        values = raw.values[offset:offset + n].tolist()
        flags = raw.flags[offset:offset + n].tolist()
        offset += n
        # Epoch seconds as float64 hold microseconds exactly for centuries around now, so
        # the datetime (and the line's timestamp) is the one the driver stamped.
        out.extend(Sample(tag, datetime.fromtimestamp(t, UTC), v, _FLAGS.get(f, DataFlag.D))
                   for t, v, f in zip(times, values, flags, strict=True))
    return out


def sample_lines(samples: Iterable[Sample], site: str) -> list[str]:
    """Lines `sample,site=…,tag=…,flag=… value=…` of raw samples, in the order given."""
    prefixes: dict[tuple[str, str], str] = {}
    site_tag = f"sample,site={escape_key(site)}" if site else "sample"
    out: list[str] = []
    for s in samples:
        value = format_field(s.value)
        if value is None:
            continue
        key = (s.tag, s.flag.name)
        prefix = prefixes.get(key)
        if prefix is None:
            tag_part = f",tag={escape_key(s.tag)}" if s.tag else ""
            prefix = prefixes[key] = f"{site_tag}{tag_part},flag={s.flag.name} value="
        out.append(f"{prefix}{value} {timestamp_ns(s.t)}")
    return out


def _line_time_ns(text: str) -> int | None:
    """The timestamp (last field) of a line of line protocol; None if it has none."""
    _, _, tail = text.rpartition(" ")
    try:
        return int(tail)
    except ValueError:
        return None


def _iso_ns(t_ns: int | None) -> str:
    if t_ns is None:
        return "?"
    return datetime.fromtimestamp(t_ns / 1e9, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True)
class Drop:
    """Batches the outbox dropped at once because a cap was reached."""

    reason: str  # "size" or "age"
    batches: int
    lines: int
    bytes: int
    t_first_ns: int | None  # the earliest and latest point dropped
    t_last_ns: int | None

    def describe(self) -> str:
        """What was dropped, for the log."""
        return (f"{self.batches} batches, {self.lines} lines ({self.bytes / 1e6:.1f} MB), "
                f"points from {_iso_ns(self.t_first_ns)} to {_iso_ns(self.t_last_ns)}")


class _Outbox:
    """The SQLite file of unsent batches; used from one worker thread only.

    Besides the batches it holds the high-water mark (`state`), the batches the server
    rejected for good (`rejected`) and a record of what the caps dropped (`dropped`).
    The counters (`batches`, `lines`, `bytes`, `oldest_ms`) mirror the table so that
    nobody has to count it.
    """

    _BATCH_COLUMNS = (("n_lines", "INTEGER NOT NULL DEFAULT 0"),
                      ("bytes", "INTEGER NOT NULL DEFAULT 0"),
                      ("t_min_ns", "INTEGER"), ("t_max_ns", "INTEGER"),
                      ("created_ms", "INTEGER NOT NULL DEFAULT 0"))

    def __init__(self, path: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.gzip_level: int | None = _GZIP_LEVEL  # None: batches are sent as they are
        db = self._db
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a killed process loses nothing committed; a power loss may
        # lose the last batches, which the refill from the historian (the durable
        # record) sends again on start. FULL cost 20-25 % of the accepted rate (a disk
        # sync per sent batch's delete).
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS batches ("
                   "id INTEGER PRIMARY KEY AUTOINCREMENT, lines TEXT NOT NULL)")
        have = {row[1] for row in db.execute("PRAGMA table_info(batches)")}
        for column, definition in self._BATCH_COLUMNS:
            if column not in have:  # an outbox written by an older version
                db.execute(f"ALTER TABLE batches ADD COLUMN {column} {definition}")
        with db:
            db.execute("BEGIN")
            # Old rows: their sizes, and their age from now on.
            db.execute("UPDATE batches SET bytes = length(CAST(lines AS BLOB)), n_lines ="
                       " length(lines) - length(replace(lines, char(10), '')) + 1,"
                       " created_ms = ? WHERE bytes = 0", (self.now_ms(),))
        db.execute("CREATE TABLE IF NOT EXISTS rejected ("
                   "id INTEGER PRIMARY KEY, lines TEXT NOT NULL, status INTEGER, "
                   "reason TEXT, rejected_at TEXT NOT NULL)")
        db.execute("CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value INTEGER)")
        db.execute("CREATE TABLE IF NOT EXISTS dropped ("
                   "id INTEGER PRIMARY KEY AUTOINCREMENT, dropped_at TEXT NOT NULL, "
                   "reason TEXT NOT NULL, batches INTEGER NOT NULL, lines INTEGER NOT NULL, "
                   "bytes INTEGER NOT NULL, t_first_ns INTEGER, t_last_ns INTEGER)")
        row = db.execute("SELECT count(*), total(n_lines), total(bytes) FROM batches").fetchone()
        self.batches, self.lines, self.bytes = int(row[0]), int(row[1]), int(row[2])
        self.oldest_ms: int | None = None
        self._read_oldest()
        state = dict(db.execute("SELECT key, value FROM state").fetchall())
        self.hwm_ms: int | None = state.get("hwm_ms")
        self.partial: tuple[int, int] = (int(state.get("partial_ms", _HWM_NONE)),
                                         int(state.get("partial_lines", 0)))

    @staticmethod
    def now_ms() -> int:
        """Wall-clock time in epoch milliseconds."""
        return int(time.time() * 1000)

    def _read_oldest(self) -> None:
        row = self._db.execute(
            "SELECT created_ms FROM batches ORDER BY id LIMIT 1").fetchone()
        self.oldest_ms = None if row is None else int(row[0])

    def set_hwm(self, hwm_ms: int) -> None:
        """Set the high-water mark (a new outbox: what the historian holds is not owed)."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("INSERT OR REPLACE INTO state VALUES ('hwm_ms', ?)", (hwm_ms,))
        self.hwm_ms = hwm_ms

    def append(self, batches: Sequence[Sequence[str]], done_ms: int | None,
               partial: tuple[int, int] | None) -> None:
        """Store batches and, in the same transaction, how far the minutes are stored:
        `done_ms` the last minute now complete, `partial` (minute, lines of its results
        stored) the minute the last batch ends inside of."""
        rows = []
        now = self.now_ms()
        for lines in batches:
            text = "\n".join(lines)
            times = [t for t in map(_line_time_ns, lines) if t is not None]
            rows.append((text, len(lines), len(text.encode()), min(times, default=None),
                         max(times, default=None), now))
        with self._db:  # one transaction, one fsync, for a whole block's batches
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO batches (lines, n_lines, bytes, t_min_ns, t_max_ns, created_ms)"
                " VALUES (?,?,?,?,?,?)", rows)
            hwm = self.hwm_ms if done_ms is None else max(done_ms, self.hwm_ms or _HWM_NONE)
            if hwm is not None:
                self._db.execute("INSERT OR REPLACE INTO state VALUES ('hwm_ms', ?)", (hwm,))
            p_ms, p_lines = partial if partial is not None else (_HWM_NONE, 0)
            self._db.execute("INSERT OR REPLACE INTO state VALUES ('partial_ms', ?)", (p_ms,))
            self._db.execute("INSERT OR REPLACE INTO state VALUES ('partial_lines', ?)",
                             (p_lines,))
        self.hwm_ms = hwm
        self.partial = (p_ms, p_lines)
        self.batches += len(rows)
        self.lines += sum(r[1] for r in rows)
        self.bytes += sum(r[2] for r in rows)
        if self.oldest_ms is None:
            self.oldest_ms = now

    def oldest(self, after_id: int = 0) -> tuple[int, bytes, int] | None:
        """(id, body (gzip at gzip_level), lines) of the oldest batch (after batch
        `after_id`); None if there is none."""
        row = self._db.execute(
            "SELECT id, lines, n_lines FROM batches WHERE id > ? ORDER BY id LIMIT 1",
            (after_id,)).fetchone()
        if row is None:
            return None
        body = str(row[1]).encode()
        if self.gzip_level is not None:
            body = gzip.compress(body, compresslevel=self.gzip_level, mtime=0)
        return int(row[0]), body, int(row[2])

    def _forget(self, batch_id: int) -> None:
        """Delete a batch inside the caller's transaction, keeping the counters."""
        row = self._db.execute("SELECT n_lines, bytes FROM batches WHERE id = ?",
                               (batch_id,)).fetchone()
        if row is None:  # a cap dropped it while it was being sent
            return
        self._db.execute("DELETE FROM batches WHERE id = ?", (batch_id,))
        self.batches -= 1
        self.lines -= int(row[0])
        self.bytes -= int(row[1])

    def delete(self, batch_id: int) -> None:
        """Delete a batch the server took."""
        with self._db:
            self._db.execute("BEGIN")
            self._forget(batch_id)
        self._read_oldest()

    def reject(self, batch_id: int, status: int, reason: str) -> None:
        """Move a batch the server will never take to the `rejected` table."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO rejected (id, lines, status, reason, rejected_at) "
                "SELECT id, lines, ?, ?, ? FROM batches WHERE id = ?",
                (status, reason, datetime.now(UTC).isoformat(), batch_id))
            self._forget(batch_id)
        self._read_oldest()

    def enforce(self, max_bytes: int, max_age_ms: int) -> list[Drop]:
        """Drop the oldest batches beyond the caps (age, then size); say what went."""
        drops = []
        cutoff = self.now_ms() - max_age_ms
        if self.oldest_ms is not None and self.oldest_ms < cutoff:
            row = self._db.execute("SELECT MAX(id) FROM batches WHERE created_ms < ?",
                                   (cutoff,)).fetchone()
            drops.append(self._drop_through("age", int(row[0])))
        if self.bytes > max_bytes:
            excess, last_id = self.bytes - max_bytes, None
            for batch_id, size in self._db.execute("SELECT id, bytes FROM batches ORDER BY id"):
                excess -= int(size)
                last_id = int(batch_id)
                if excess <= 0:
                    break
            if last_id is not None:
                drops.append(self._drop_through("size", last_id))
        return drops

    def _drop_through(self, reason: str, last_id: int) -> Drop:
        """Delete every batch with id ≤ last_id and record it in `dropped`."""
        with self._db:
            self._db.execute("BEGIN")
            n, lines, size, t0, t1 = self._db.execute(
                "SELECT count(*), total(n_lines), total(bytes), MIN(t_min_ns), MAX(t_max_ns)"
                " FROM batches WHERE id <= ?", (last_id,)).fetchone()
            drop = Drop(reason, int(n), int(lines), int(size), t0, t1)
            self._db.execute("DELETE FROM batches WHERE id <= ?", (last_id,))
            self._db.execute(
                "INSERT INTO dropped (dropped_at, reason, batches, lines, bytes, t_first_ns,"
                " t_last_ns) VALUES (?,?,?,?,?,?,?)",
                (datetime.now(UTC).isoformat(), reason, drop.batches, drop.lines, drop.bytes,
                 t0, t1))
        self.batches -= drop.batches
        self.lines -= drop.lines
        self.bytes -= drop.bytes
        self._read_oldest()
        return drop

    def close(self) -> None:
        """Close the file."""
        self._db.close()


class MinuteSource(Protocol):
    """Where the outbox is refilled from after a kill: the historian's stored minutes."""

    async def latest_minute(self) -> datetime | None:
        """Start of the last stored minute; None when none is stored."""
        ...

    def minutes_after(self, after: datetime | None) -> AsyncIterator[MinuteResult]:
        """The stored minutes later than `after` (all if None), oldest first, as the minute
        cycle made them (totals included, raw window attached)."""
        ...


@dataclass(slots=True)
class _Mark:
    """Where one minute's result lines are in the pending list (end excluded)."""

    start: int
    end: int
    t_ms: int
    stored: int  # lines of this minute's results in the outbox already


def _is_loopback(url: str) -> bool:
    """Whether the URL's host is this machine (localhost, 127.0.0.0/8, ::1)."""
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _to_ms(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(milliseconds=1)


class InfluxSink:
    """Sink that writes results and raw samples to an InfluxDB v2 write API."""

    name = "influx"

    def __init__(self, config: InfluxConfig, site_id: str,
                 refill: MinuteSource | None = None,
                 on_event: OnDeviceEvent | None = None) -> None:
        """`refill`: the historian's minutes, re-sent on start if the outbox lacks them;
        `on_event`: where the outbox's alarm goes (server/influx/alarm.py)."""
        self.config = config
        self.site_id = site_id
        self._token = os.environ.get(config.token_env, "") if config.token_env else ""
        self._source = refill
        self._pending: list[str] = []
        self._marks: list[_Mark] = []
        self._batches = 0  # rows in the outbox, mirrored so the status API need not query
        self._executor: ThreadPoolExecutor | None = None
        self._outbox: _Outbox | None = None
        self._client: InfluxDBClientAsync | None = None
        self._write_service: WriteService | None = None
        self._flush_lock = asyncio.Lock()
        self._wake = asyncio.Event()  # a batch was added, or stop() was called
        self._stopping = False
        self._failing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._max_bytes = int(config.outbox_max_mb * 1e6)
        self._max_age_ms = int(config.outbox_max_age_h * 3600 * 1000)
        self._warned = False  # the outbox passed outbox_warn_pct of a cap
        self._episode: dict[str, list[Drop]] = {}  # drops since the outbox was last fine
        self._alarm = OutboxAlarm(config, on_event)
        self._stats: dict[str, float] = dict.fromkeys(STAT_NAMES, 0.0)
        # The batch after the one in flight, read ahead, with the drop count of then.
        self._ahead: tuple[tuple[int, bytes, int], float] | None = None
        # Over loopback, gzip level 1 (6x smaller, 1.7 ms a 5000-line batch here) cost a
        # third of the points/s VictoriaMetrics took: both ends pay the CPU, no time is saved.
        self._gzip = not _is_loopback(config.url)

    async def start(self) -> None:
        """Open the outbox, refill it from the historian, start the flush and send tasks."""
        # One worker thread: SQLite work stays off the event loop and runs in call order.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="influx-outbox")
        self._outbox = await self._run(_Outbox, self.config.outbox_path)
        if not self._gzip:
            self._outbox.gzip_level = None
        self._sync()
        if self._batches:
            log.info("InfluxDB outbox holds %d unsent batches", self._batches)
        await self._enforce_caps()
        self._client = InfluxDBClientAsync(
            url=self.config.url, token=self._token, org=self.config.org,
            enable_gzip=False, timeout=_HTTP_TIMEOUT_MS)  # gzip is ours, off the loop
        self._write_service = WriteService(  # type: ignore[no-untyped-call]
            self._client.api_client)
        await self._refill()
        self._tasks = [
            asyncio.create_task(self._flush_loop(), name="influx:flush"),
            asyncio.create_task(self._send_loop(), name="influx:send"),
        ]

    async def on_samples(self, block: SampleBlock) -> None:
        """Queue raw readings as lines (when the configuration asks for raw samples)."""
        if not self.config.raw_samples or not len(block):
            return
        if len(block) < _THREAD_MIN_READINGS:
            lines = block_lines(block, self.site_id)
        else:  # ~0.5 µs a reading: a big block would hold the loop for tens of ms
            lines = await asyncio.to_thread(block_lines, block, self.site_id)
        await self._add(lines)

    async def on_minute(self, result: MinuteResult) -> None:
        """Queue one minute's results as lines."""
        if source_count(result) < _THREAD_MIN_SOURCES:
            lines = minute_lines(result, self.site_id)
        else:  # ~6 µs a source
            lines = await asyncio.to_thread(minute_lines, result, self.site_id)
        await self._add(lines, _to_ms(result.t))

    async def on_revised(self, revised: RevisedMinutes) -> None:
        """Queue the lines of minutes corrected after they were sent (a correction entry)."""
        await self._add(revised_lines(revised, self.site_id))

    def pending_batches(self) -> int:
        """Number of batches in the outbox that the server has not accepted yet."""
        return self._batches

    def stats(self) -> dict[str, float]:
        """The outbox's figures for monitoring, named as in STAT_NAMES (a snapshot)."""
        out = dict(self._stats)
        out["pending_lines"] = float(len(self._pending))
        out["send_failing"] = float(self._failing)
        return out

    async def flush(self) -> None:
        """Write the lines collected so far to the outbox as batches of at most batch_lines."""
        await self._flush(everything=True)

    async def stop(self) -> None:
        """Flush to the outbox, try one last short send, close the client and the outbox."""
        flush_task, send_task = self._tasks or (None, None)
        if flush_task is not None:
            flush_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flush_task
        if self._outbox is not None:
            try:
                await self._flush(everything=True)
            except Exception as exc:  # keep closing; the historian still has the minutes
                log.error("InfluxDB outbox: cannot store %d lines on stop: %s",
                          len(self._pending), exc)
        self._stopping = True
        self._wake.set()
        if send_task is not None:
            try:
                await asyncio.wait_for(send_task, _STOP_SEND_TIMEOUT_S)
            except TimeoutError:
                pass  # wait_for cancelled it; the unsent batches stay in the outbox
            except Exception as exc:
                log.error("InfluxDB sender ended with %s: %s", type(exc).__name__, exc)
        self._tasks = []
        self._end_drop_episode()
        if self._batches:
            log.warning("InfluxDB: %d batches left in the outbox for the next start",
                        self._batches)
        if self._client is not None:
            await self._client.close()  # type: ignore[no-untyped-call]
            self._client = None
            self._write_service = None
        if self._outbox is not None:
            await self._run(self._outbox.close)
            self._outbox = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._executor is not None, "InfluxSink used before start()"
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _sync(self) -> None:
        """Mirror the outbox's counters (set in its thread) for the loop's readers."""
        box = self._outbox
        if box is None:
            return
        self._batches = box.batches
        st = self._stats
        st["outbox_batches"] = float(box.batches)
        st["outbox_lines"] = float(box.lines)
        st["outbox_bytes"] = float(box.bytes)
        age_s = 0.0 if box.oldest_ms is None else max(0.0, (box.now_ms() - box.oldest_ms) / 1e3)
        st["outbox_oldest_age_s"] = age_s
        st["outbox_fill_pct"] = 100 * max(box.bytes / self._max_bytes,
                                          age_s * 1000 / self._max_age_ms)

    async def _refill(self) -> None:
        """Queue the minutes the historian stored after the outbox's high-water mark."""
        box = self._outbox
        assert box is not None
        if self._source is None:
            return
        try:
            if box.hwm_ms is None:  # a new outbox: what is stored already is not owed
                latest = await self._source.latest_minute()
                await self._run(box.set_hwm, _HWM_NONE if latest is None else _to_ms(latest))
                return
            hwm = box.hwm_ms
            after = None if hwm == _HWM_NONE else _EPOCH + timedelta(milliseconds=hwm)
            p_ms, p_lines = box.partial
            n, first, last, lines = 0, "", "", 0
            async for result in self._source.minutes_after(after):
                t_ms = _to_ms(result.t)
                if self.config.raw_samples and result.raw is not None:
                    got = sample_lines(window_samples(result.raw), self.site_id)
                    lines += len(got)
                    await self._add(got)
                # Lines of this minute's results the outbox holds already are not re-sent.
                skip = p_lines if t_ms == p_ms and p_ms > hwm else 0
                got = result_lines(result, self.site_id)[skip:]
                lines += len(got)
                await self._add(got, t_ms, stored=skip)
                n += 1
                first = first or result.t.isoformat()
                last = result.t.isoformat()
            await self._flush(everything=True)
        except Exception as exc:
            log.error("InfluxDB outbox: cannot refill from the historian (%s: %s); minutes "
                      "stored since the last start may be missing in InfluxDB",
                      type(exc).__name__, exc)
            return
        if n:
            self._stats["refilled_minutes_total"] += n
            self._stats["refilled_lines_total"] += lines
            log.warning("InfluxDB outbox refilled from the historian: %d minutes (%s to %s), "
                        "%d lines that were not stored in the outbox before the last stop",
                        n, first, last, lines)

    async def _add(self, lines: list[str], t_ms: int | None = None, stored: int = 0) -> None:
        """Queue lines; with `t_ms`, they are the results of that minute (or their rest)."""
        start = len(self._pending)
        self._pending.extend(lines)
        if t_ms is not None:
            self._marks.append(_Mark(start, len(self._pending), t_ms, stored))
        if len(self._pending) >= self.config.batch_lines:
            await self._flush(everything=False)

    def _progress(self, n: int) -> tuple[int | None, tuple[int, int] | None]:
        """How far the minutes are stored once the first n pending lines are."""
        done, partial = None, None
        for m in self._marks:
            if m.end <= n:
                done = m.t_ms
            elif m.start < n:
                partial = (m.t_ms, m.stored + n - m.start)
                break
            else:
                break
        return done, partial

    def _advance_marks(self, n: int) -> None:
        """The first n pending lines were stored: move the marks along."""
        kept = []
        for m in self._marks:
            if m.end <= n:
                continue
            if m.start < n:
                m.stored += n - m.start
                m.start = n
            m.start -= n
            m.end -= n
            kept.append(m)
        self._marks = kept

    async def _flush(self, *, everything: bool) -> None:
        """Move pending lines to the outbox: full batches, plus the remainder if `everything`."""
        size = self.config.batch_lines
        async with self._flush_lock:
            while self._pending and (everything or len(self._pending) >= size):
                # Several batches a transaction: one fsync for a block's batches, not one each.
                n = min(len(self._pending), size * _BATCHES_PER_STORE)
                if not everything:
                    n -= n % size
                chunks = [self._pending[k:k + size] for k in range(0, n, size)]
                done, partial = self._progress(n)
                assert self._outbox is not None
                # The lines leave the pending list only once stored (a failure keeps them).
                await self._run(self._outbox.append, chunks, done, partial)
                del self._pending[:n]
                self._advance_marks(n)
                await self._enforce_caps(sizes_only=True)
                self._wake.set()

    async def _enforce_caps(self, *, sizes_only: bool = False) -> None:
        """Apply the outbox's caps; warn before them, say loudly what they dropped."""
        box = self._outbox
        assert box is not None
        if sizes_only and box.bytes <= self._max_bytes:
            drops = []
        else:
            drops = await self._run(box.enforce, self._max_bytes, self._max_age_ms)
        self._sync()
        for d in drops:
            self._stats["outbox_dropped_batches_total"] += d.batches
            self._stats["outbox_dropped_lines_total"] += d.lines
            self._stats[f"outbox_drops_{d.reason}_total"] += 1
            if d.reason not in self._episode:
                cap = (f"{self.config.outbox_max_mb:g} MB" if d.reason == "size"
                       else f"{self.config.outbox_max_age_h:g} h")
                log.error("InfluxDB outbox reached its %s cap (%s) while %s is not taking "
                          "writes: DROPPED the oldest %s (kept on record in the outbox's "
                          "'dropped' table; the historian still has them)", d.reason, cap,
                          self.config.url, d.describe())
            self._episode.setdefault(d.reason, []).append(d)
        fill = self._stats["outbox_fill_pct"]
        if fill >= self.config.outbox_warn_pct and not self._warned:
            self._warned = True
            log.warning("InfluxDB outbox at %.0f%% of its cap (%.1f MB of %g MB, oldest batch "
                        "%.1f h of %g h): the oldest batches will be dropped at 100%%", fill,
                        self._stats["outbox_bytes"] / 1e6, self.config.outbox_max_mb,
                        self._stats["outbox_oldest_age_s"] / 3600, self.config.outbox_max_age_h)
        elif fill < self.config.outbox_warn_pct / 2 and self._warned:
            self._warned = False
            self._end_drop_episode()
        if self._tasks:  # started: the alarm engine takes events (the first check waits)
            self._alarm.update(self._warned or bool(self._episode), self._stats, self._episode)

    def _end_drop_episode(self) -> None:
        """Once the outbox is well below its caps again (or on stop): what went in all."""
        for reason, drops in self._episode.items():
            if len(drops) > 1:
                firsts = [d.t_first_ns for d in drops if d.t_first_ns is not None]
                lasts = [d.t_last_ns for d in drops if d.t_last_ns is not None]
                total = Drop(reason, sum(d.batches for d in drops),
                             sum(d.lines for d in drops), sum(d.bytes for d in drops),
                             min(firsts, default=None), max(lasts, default=None))
                log.error("InfluxDB outbox: the %s cap dropped %s in all (%d times)",
                          reason, total.describe(), len(drops))
        self._episode = {}

    async def _flush_loop(self) -> None:
        last_error = ""
        while True:
            await asyncio.sleep(self.config.flush_interval_s)
            try:
                await self._flush(everything=True)
                await self._enforce_caps()  # the age cap passes without new batches too
                last_error = ""
            except Exception as exc:
                text = f"{type(exc).__name__}: {exc}"
                if text != last_error:
                    log.error("InfluxDB outbox: cannot store batch: %s", text)
                    last_error = text

    async def _send_loop(self) -> None:
        delay = _BACKOFF_FIRST_S
        while True:
            try:
                sent = await self._send_oldest()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the outbox itself failed (disk, permissions)
                sent = False
                self._report_failure(f"outbox: {type(exc).__name__}: {exc}")
            if sent is None:
                return
            if sent:
                delay = _BACKOFF_FIRST_S
                continue
            if self._stopping:
                return
            # Wait out the backoff, but wake early for stop() to make its one last try.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wait_stopping(), delay)
            delay = min(delay * 2, _BACKOFF_MAX_S)

    async def _send_oldest(self) -> bool | None:
        """Send the oldest batch: True when done with it, False to back off, None to end."""
        assert self._outbox is not None
        # Clear before looking, so a batch added while we look still wakes us.
        self._wake.clear()
        ahead_batch, self._ahead = self._ahead, None
        drops = self._stats["outbox_dropped_batches_total"]
        batch = None
        if ahead_batch is not None and ahead_batch[1] == drops:
            batch = ahead_batch[0]
        if batch is None:
            batch = await self._run(self._outbox.oldest)
        if batch is None:
            if self._stopping:
                return None
            await self._wake.wait()
            return True
        batch_id, body, n_lines = batch
        # Read (and compress) the next batch while this one is in flight, so that the
        # server's work and ours overlap; it is used only if this one is taken and no
        # cap dropped batches in between.
        ahead = asyncio.ensure_future(self._run(self._outbox.oldest, batch_id))
        try:
            error = await self._send(body)
        except BaseException:
            ahead.cancel()
            raise
        if error is None or error[0] in _PERMANENT_REJECTIONS:
            with contextlib.suppress(Exception):  # the next look reads it again
                got = await ahead
                if got is not None:
                    self._ahead = (got, drops)
        else:
            ahead.cancel()
        if error is None:
            await self._run(self._outbox.delete, batch_id)
            self._sync()
            self._stats["sent_batches_total"] += 1
            self._stats["sent_lines_total"] += n_lines
            if self._failing:
                self._failing = False
                log.info("InfluxDB reachable again; %d batches left to send", self._batches)
            if self._warned:
                await self._enforce_caps(sizes_only=True)  # ends the warning when drained
            return True
        status, reason = error
        if status in _PERMANENT_REJECTIONS:
            log.error("InfluxDB rejected batch %d for good (%s); it is kept in the outbox's "
                      "'rejected' table", batch_id, reason)
            await self._run(self._outbox.reject, batch_id, status, reason)
            self._sync()
            self._stats["rejected_batches_total"] += 1
            return True
        self._report_failure(reason)
        return False

    def _report_failure(self, reason: str) -> None:
        """Log the first failure of an outage only; the recovery is logged once too."""
        if not self._failing:
            self._failing = True
            log.warning("InfluxDB write to %s failed (%s); keeping batches in the outbox "
                        "and retrying", self.config.url, reason)

    async def _wait_stopping(self) -> None:
        while not self._stopping:
            self._wake.clear()
            await self._wake.wait()

    async def _send(self, body: bytes) -> tuple[int, str] | None:
        """Post one batch (gzip unless on loopback); None when accepted, else (status, reason)."""
        assert self._write_service is not None
        try:
            await self._write_service.post_write_async(  # type: ignore[no-untyped-call]
                org=self.config.org, bucket=self.config.bucket, body=body, precision=_NS,
                content_type="text/plain; charset=utf-8", _return_http_data_only=True,
                **({"content_encoding": "gzip"} if self._gzip else {}))
        except asyncio.CancelledError:
            raise
        except ApiException as exc:
            status = int(exc.status or 0)
            return status, f"HTTP {status} {exc.reason}" if status else str(exc.reason)
        except Exception as exc:
            return 0, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return None


# What InfluxSink.stats() reports (for the metrics endpoint): outbox_* describe the file
# (fill_pct is the larger of size / outbox_max_mb and oldest age / outbox_max_age_h),
# *_total count since start.
STAT_NAMES = ("outbox_batches", "outbox_lines", "outbox_bytes", "outbox_oldest_age_s",
              "outbox_fill_pct", "outbox_dropped_batches_total", "outbox_dropped_lines_total",
              "outbox_drops_size_total", "outbox_drops_age_total", "refilled_minutes_total",
              "refilled_lines_total", "sent_batches_total", "sent_lines_total",
              "rejected_batches_total", "pending_lines", "send_failing")
