"""InfluxDB sink: results and raw samples as line protocol, sent through a durable outbox.

Lines are built in bulk by the small functions below, collected in memory and written
as batches to a SQLite outbox; a sender task posts the outbox oldest first to any
server of the InfluxDB v2 write API and deletes a batch only once the server took it.
Nothing is dropped during an outage, and batches survive a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.client.write_api_async import WriteApiAsync
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from model.records import MinuteResult, Sample
from server.influx.config import InfluxConfig

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


class _Outbox:
    """The SQLite file of unsent batches; used from one worker thread only."""

    def __init__(self, path: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS batches ("
                         "id INTEGER PRIMARY KEY AUTOINCREMENT, lines TEXT NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS rejected ("
                         "id INTEGER PRIMARY KEY, lines TEXT NOT NULL, status INTEGER, "
                         "reason TEXT, rejected_at TEXT NOT NULL)")

    def count(self) -> int:
        row = self._db.execute("SELECT count(*) FROM batches").fetchone()
        return int(row[0])

    def append(self, lines: Sequence[str]) -> None:
        self._db.execute("INSERT INTO batches (lines) VALUES (?)", ("\n".join(lines),))

    def oldest(self) -> tuple[int, str] | None:
        row = self._db.execute("SELECT id, lines FROM batches ORDER BY id LIMIT 1").fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def delete(self, batch_id: int) -> None:
        self._db.execute("DELETE FROM batches WHERE id = ?", (batch_id,))

    def reject(self, batch_id: int, status: int, reason: str) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO rejected (id, lines, status, reason, rejected_at) "
                "SELECT id, lines, ?, ?, ? FROM batches WHERE id = ?",
                (status, reason, datetime.now(UTC).isoformat(), batch_id))
            self._db.execute("DELETE FROM batches WHERE id = ?", (batch_id,))

    def close(self) -> None:
        self._db.close()


class InfluxSink:
    """Sink that writes results and raw samples to an InfluxDB v2 write API."""

    name = "influx"

    def __init__(self, config: InfluxConfig, site_id: str) -> None:
        self.config = config
        self.site_id = site_id
        self._token = os.environ.get(config.token_env, "") if config.token_env else ""
        self._pending: list[str] = []
        self._batches = 0  # rows in the outbox, mirrored so the status API need not query
        self._executor: ThreadPoolExecutor | None = None
        self._outbox: _Outbox | None = None
        self._client: InfluxDBClientAsync | None = None
        self._write_api: WriteApiAsync | None = None
        self._flush_lock = asyncio.Lock()
        self._wake = asyncio.Event()  # a batch was added, or stop() was called
        self._stopping = False
        self._failing = False
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Open the outbox and start the flush and sender tasks."""
        # One worker thread: SQLite work stays off the event loop and runs in call order.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="influx-outbox")
        self._outbox = await self._run(_Outbox, self.config.outbox_path)
        self._batches = await self._run(self._outbox.count)
        if self._batches:
            log.info("InfluxDB outbox holds %d unsent batches", self._batches)
        self._client = InfluxDBClientAsync(
            url=self.config.url, token=self._token, org=self.config.org,
            enable_gzip=True, timeout=_HTTP_TIMEOUT_MS)
        self._write_api = self._client.write_api()
        self._tasks = [
            asyncio.create_task(self._flush_loop(), name="influx:flush"),
            asyncio.create_task(self._send_loop(), name="influx:send"),
        ]

    async def on_samples(self, samples: Sequence[Sample]) -> None:
        """Queue raw samples as lines (when the configuration asks for raw samples)."""
        if self.config.raw_samples:
            await self._add(sample_lines(samples, self.site_id))

    async def on_minute(self, result: MinuteResult) -> None:
        """Queue one minute's results as lines."""
        await self._add(result_lines(result, self.site_id))

    def pending_batches(self) -> int:
        """Number of batches in the outbox that the server has not accepted yet."""
        return self._batches

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
            except Exception as exc:  # keep closing; the lines are still in memory only
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
        if self._batches:
            log.warning("InfluxDB: %d batches left in the outbox for the next start",
                        self._batches)
        if self._client is not None:
            await self._client.close()  # type: ignore[no-untyped-call]
            self._client = None
            self._write_api = None
        if self._outbox is not None:
            await self._run(self._outbox.close)
            self._outbox = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._executor is not None, "InfluxSink used before start()"
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _add(self, lines: list[str]) -> None:
        self._pending.extend(lines)
        if len(self._pending) >= self.config.batch_lines:
            await self._flush(everything=False)

    async def _flush(self, *, everything: bool) -> None:
        """Move pending lines to the outbox: full batches, plus the remainder if `everything`."""
        size = self.config.batch_lines
        async with self._flush_lock:
            while self._pending and (everything or len(self._pending) >= size):
                chunk = self._pending[:size]
                del self._pending[:size]
                assert self._outbox is not None
                try:
                    await self._run(self._outbox.append, chunk)
                except BaseException:
                    self._pending[:0] = chunk  # keep them, in order, for the next try
                    raise
                self._batches += 1
                self._wake.set()

    async def _flush_loop(self) -> None:
        last_error = ""
        while True:
            await asyncio.sleep(self.config.flush_interval_s)
            try:
                await self._flush(everything=True)
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
        batch = await self._run(self._outbox.oldest)
        if batch is None:
            if self._stopping:
                return None
            await self._wake.wait()
            return True
        batch_id, text = batch
        error = await self._send(text)
        if error is None:
            await self._run(self._outbox.delete, batch_id)
            self._batches -= 1
            if self._failing:
                self._failing = False
                log.info("InfluxDB reachable again; %d batches left to send", self._batches)
            return True
        status, reason = error
        if status in _PERMANENT_REJECTIONS:
            log.error("InfluxDB rejected batch %d for good (%s); it is kept in the outbox's "
                      "'rejected' table", batch_id, reason)
            await self._run(self._outbox.reject, batch_id, status, reason)
            self._batches -= 1
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

    async def _send(self, text: str) -> tuple[int, str] | None:
        """Post one batch; None when accepted, else (HTTP status or 0, reason)."""
        assert self._write_api is not None
        try:
            await self._write_api.write(
                bucket=self.config.bucket, org=self.config.org, record=text,
                write_precision=_NS)
        except asyncio.CancelledError:
            raise
        except ApiException as exc:
            status = int(exc.status or 0)
            return status, f"HTTP {status} {exc.reason}" if status else str(exc.reason)
        except Exception as exc:
            return 0, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return None
