"""The InfluxDB outbox's caps: a warning first, then the oldest batches dropped, loudly,
with what was dropped on record (issue 11)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from server.influx.sink import InfluxSink
from tests.conftest import free_port
from tests.server.test_influx import T0, make_config, minute, outbox_lines


async def test_size_cap_warns_then_drops_oldest(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="server.influx")
    # Nothing listens: an outage. A minute is 3 lines of about 1.2 kB; the cap is 6 kB.
    config = make_config(tmp_path, f"http://127.0.0.1:{free_port()}", batch_lines=3,
                         outbox_max_mb=0.006)
    sink = InfluxSink(config, "site1")
    await sink.start()
    try:
        for i in range(20):
            await sink.on_minute(minute(T0 + timedelta(minutes=i), 1000.0 + i))
        stats = sink.stats()
    finally:
        await sink.stop()
    assert stats["outbox_bytes"] <= 6000
    kept = [ln for ln in outbox_lines(config.outbox_path) if ln.startswith("co2_site")]
    dropped_minutes = 20 - len(kept)
    assert dropped_minutes > 0
    # The newest are kept, the oldest dropped, in order.
    assert kept[-1].split(" co2_kg=")[1].startswith("1019,")
    assert stats["outbox_dropped_lines_total"] == 3 * dropped_minutes
    assert "outbox at" in caplog.text and "of its cap" in caplog.text  # the warning first
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and "DROPPED" in r.message]
    assert len(errors) == 1  # once per kind, not once per batch
    assert "2024-03-01T08:00:00+00:00" in errors[0].message  # the first dropped point
    with sqlite3.connect(config.outbox_path) as db:
        rows = db.execute("SELECT reason, sum(lines), min(t_first_ns) FROM dropped"
                          " GROUP BY reason").fetchall()
    assert rows == [("size", 3 * dropped_minutes, 1_709_280_000_000_000_000)]


async def test_age_cap_drops_what_waited_too_long(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    # 0.36 s; the flush loop applies it even when nothing new arrives.
    config = make_config(tmp_path, f"http://127.0.0.1:{free_port()}", batch_lines=3,
                         outbox_max_age_h=0.0001, flush_interval_s=0.1)
    sink = InfluxSink(config, "site1")
    await sink.start()
    try:
        await sink.on_minute(minute(T0, 1.0))
        await sink.flush()
        assert sink.pending_batches() == 1
        for _ in range(100):
            if sink.pending_batches() == 0:
                break
            await asyncio.sleep(0.05)
        stats = sink.stats()
    finally:
        await sink.stop()
    assert sink.pending_batches() == 0
    assert stats["outbox_drops_age_total"] == 1
    assert stats["outbox_dropped_lines_total"] == 3
    assert "age cap" in caplog.text and "DROPPED the oldest 1 batches, 3 lines" in caplog.text
