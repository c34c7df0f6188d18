"""A backup during full load does not hold the minute cycle (issue 15), measured.

A historian of ~100 MB (raw windows of random bytes, the real schema) is written a minute
at a time as the server does (source, unit, tag and raw rows in one transaction, on a
worker thread awaited from the event loop). Two benchmarks in one group, same run:
the minute's write with no backup (the baseline) and with online backups of the file
running back to back in another thread (server/backup.copy_historian, its default steps).
`extra_info` holds the largest event-loop lag seen by a 5 ms sleeper during the rounds and
how many backups ran. Compare min and median of the two.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.backup import BackupError, copy_historian
from server.historian import SCHEMA

SIZE_MB = 100
ROUNDS = 25


@pytest.fixture(scope="module")
def big_historian(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("bench_backup") / "historian.sqlite"
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(SCHEMA)
    n = SIZE_MB * 1_000_000 // 20_000
    with db:
        db.execute("WITH RECURSIVE i(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM i WHERE k < ?)"
                   " INSERT INTO raw_window SELECT k * 60000, 'a', x'', x'', randomblob(20000),"
                   " x'' FROM i", (n,))
    db.close()
    yield path


class Writer:
    """Writes minutes into the historian as the historian's thread does."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False)
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.t_ms = 10**12

    def minute(self) -> None:
        self.t_ms += 60_000
        t = self.t_ms
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO source_minute VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [(f"S{i}", "U1", t, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 1, "N", "")
                 for i in range(100)])
            self.db.executemany("INSERT OR REPLACE INTO tag_minute VALUES (?,?,?,?,?,?,?)",
                                [(f"tag{i}", t, 1.0, 0.5, 1.5, 60, "N") for i in range(600)])
            self.db.execute("INSERT OR REPLACE INTO raw_window VALUES (?, 'a', x'', x'',"
                            " randomblob(120000), x'')", (t,))


def _run(benchmark, path: Path, backups: bool) -> None:  # type: ignore[no-untyped-def]
    writer = Writer(path)
    stop = threading.Event()
    made = [0]

    def back_to_back() -> None:
        while not stop.is_set():
            try:
                result = copy_historian(path, path.parent / "backups", stop=stop)
            except BackupError:
                assert stop.is_set()  # abandoned at the end of the rounds
                return
            result.path.unlink()
            made[0] += 1

    thread = threading.Thread(target=back_to_back, daemon=True)
    loop = asyncio.new_event_loop()
    lag = [0.0]

    async def one_minute() -> None:
        done = asyncio.Event()

        async def sleeper() -> None:
            while not done.is_set():
                t0 = time.perf_counter()
                await asyncio.sleep(0.005)
                lag[0] = max(lag[0], time.perf_counter() - t0 - 0.005)
        probe = asyncio.create_task(sleeper())
        await asyncio.to_thread(writer.minute)
        done.set()
        await probe

    if backups:
        thread.start()
        time.sleep(0.2)  # the first copy is under way
    try:
        benchmark.pedantic(lambda: loop.run_until_complete(one_minute()), rounds=ROUNDS,
                           iterations=1, warmup_rounds=2)
    finally:
        deadline = time.monotonic() + 60
        while backups and made[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # the rounds ran during at least one whole copy
        stop.set()
        if backups:
            thread.join()
        loop.close()
        writer.db.close()
    benchmark.extra_info.update({"max_loop_lag_ms": round(lag[0] * 1000, 2),
                                 "backups_during_rounds": made[0],
                                 "historian_MB": round(path.stat().st_size / 1e6, 1)})
    if backups:
        assert made[0] >= 1


def test_minute_write_no_backup(benchmark, big_historian: Path) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = "minute write, 100 MB historian"
    _run(benchmark, big_historian, backups=False)


def test_minute_write_during_backup(benchmark, big_historian: Path) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = "minute write, 100 MB historian"
    _run(benchmark, big_historian, backups=True)
