"""Times given to the `carbonscada` command outside 1970-01-01..2200-01-01 UTC (issue 11),
as options or in a samples file: exit 2 naming the option (or the line) and the allowed
range, never exit 70 or a traceback."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from server.audit import AuditLog
from server.historian import Historian
from tests.server.test_cli import run_with, write_plant

pytestmark = pytest.mark.reliability

RANGE = "is outside the allowed range 1970-01-01T00:00:00Z to 2200-01-01T00:00:00Z"
# Year 0 and year 10000 in UTC: where converting to UTC used to overflow.
TOO_EARLY = "0001-01-01T00:00+14:00"
TOO_LATE = "9999-12-31T23:59-14:00"
GOOD_FROM, GOOD_TO = "2026-11-21T00:00+08:00", "2026-11-22T00:00+08:00"
DEMO = Path(__file__).resolve().parents[2] / "config" / "demo-plant.yaml"


def historian_with_an_entry(tmp_path: Path) -> Path:
    """A real historian file (schema and one audit entry) where the plant expects it."""
    db = tmp_path / "var" / "historian.sqlite"
    db.parent.mkdir()

    async def create() -> None:
        h = Historian(db)
        await h.start()
        await h.stop()
    asyncio.run(create())
    AuditLog(db).append("op1", "acknowledge", "alarm:S1_rate", {"comment": "seen"},
                        datetime(2026, 11, 21, 8, tzinfo=UTC))
    return db


@pytest.mark.parametrize(("command", "option", "text"), [
    ("export-samples", "--from", TOO_EARLY),
    ("export-samples", "--to", TOO_LATE),
    ("audit", "--from", TOO_EARLY),
    ("audit", "--to", TOO_LATE),
])
def test_out_of_range_times_are_exit_2_naming_the_option(
        tmp_path: Path, command: str, option: str, text: str) -> None:
    conf = str(write_plant(tmp_path))
    historian_with_an_entry(tmp_path)
    times = {"--from": GOOD_FROM, "--to": GOOD_TO, option: text}
    args = (["export-samples", "-c", conf, "--out", str(tmp_path / "samples.csv")]
            if command == "export-samples" else ["audit", "list", "-c", conf])
    r = run_with(*args, "--from", times["--from"], "--to", times["--to"], cwd=tmp_path)
    assert (r.returncode, r.stdout) == (2, ""), r.stderr
    # the message whole, after "carbonscada: error:" (on its line or the next)
    assert r.stderr.startswith("carbonscada: error:"), r.stderr
    assert r.stderr.endswith(f"{option}: {text!r} {RANGE}\n"), r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    assert not (tmp_path / "samples.csv").exists()


def test_the_ends_of_the_range_are_accepted(tmp_path: Path) -> None:
    conf = str(write_plant(tmp_path))
    historian_with_an_entry(tmp_path)
    r = run_with("audit", "list", "-c", conf, "--from", "1970-01-01T08:00+08:00",
                 "--to", "2200-01-01T00:00Z", cwd=tmp_path)
    assert (r.returncode, r.stderr) == (0, "")
    assert [line.split()[:2] for line in r.stdout.splitlines()] == [
        ["1", "2026-11-21T16:00:00.000+08:00"]]
    out = tmp_path / "samples.csv"
    r = run_with("export-samples", "-c", conf, "--from", "1970-01-01T00:00Z",
                 "--to", "2200-01-01T00:00Z", "--out", str(out), cwd=tmp_path)
    assert (r.returncode, r.stdout) == (0, ""), r.stderr
    assert out.read_text(encoding="utf-8").splitlines()[0].startswith("timestamp,tag,value")


@pytest.mark.parametrize("stamp", [TOO_EARLY, TOO_LATE, "nan", "1e300", "-1"])
def test_recalc_refuses_sample_times_outside_the_range(tmp_path: Path, stamp: str) -> None:
    samples = tmp_path / "samples.csv"
    samples.write_text("timestamp,tag,value\n2026-01-01T00:00:00+08:00,u1_gen_power,600.0\n"
                       f"{stamp},u1_gen_power,600.0\n", encoding="utf-8")
    out = tmp_path / "results.csv"
    r = run_with("recalc", "-c", str(DEMO), "--samples", str(samples), "--out", str(out),
                 cwd=tmp_path)
    assert (r.returncode, r.stdout) == (2, ""), r.stderr
    assert r.stderr.startswith("carbonscada: error:"), r.stderr
    assert r.stderr.endswith(f"{samples}: line 3: timestamp {stamp!r} {RANGE}\n"), r.stderr
    assert not out.exists()
