"""carbonscada recalc: worked examples, bad input, exact reproduction of live results."""

from __future__ import annotations

import asyncio
import csv
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from server.config import parse_config
from server.historian import Historian
from server.recalc import SamplesError, read_samples, recalculate
from server.runtime import Runtime
from tests.conftest import free_port
from tests.fixtures.plant import VECTOR, plant_dict

CARBONSCADA = str(Path(sys.executable).parent / "carbonscada")
TAGS = {"s1_velocity": VECTOR["velocity"], "s1_temp": VECTOR["temp"],
        "s1_static": VECTOR["static"], "s1_moisture": VECTOR["moisture_pct"],
        "s1_co2": VECTOR["co2"], "u1_power": 600.0}


def write_config(tmp: Path, d: dict[str, object]) -> Path:
    p = tmp / "plant.yaml"
    p.write_text(yaml.safe_dump(d, allow_unicode=True), encoding="utf-8")
    return p


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CARBONSCADA, *args], capture_output=True, text=True, timeout=120,
                          check=False)


def test_recalc_of_the_worked_example(tmp_path: Path) -> None:
    # Minute 08:00–08:01 UTC: 12 samples of each tag, half as ISO 8601 in plant time
    # (+08:00), half as epoch seconds; minute 08:01: s1_co2 has 4 samples only.
    t0 = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
    rows = ["timestamp,tag,value,flag"]
    for i in range(12):
        t = t0 + timedelta(seconds=5 * i)
        for tag, v in TAGS.items():
            stamp = (t.astimezone(timezone(timedelta(hours=8))).isoformat()
                     if i % 2 else repr(t.timestamp()))
            rows.append(f"{stamp},{tag},{v},")
    for i in range(12):
        t = t0 + timedelta(minutes=1, seconds=5 * i)
        for tag, v in TAGS.items():
            if tag != "s1_co2" or i < 4:
                rows.append(f"{t.isoformat()},{tag},{v},N")
    samples = tmp_path / "samples.csv"
    samples.write_text("\n".join(rows) + "\n", encoding="utf-8")
    cfg = write_config(tmp_path, plant_dict())  # min_samples_per_minute 5
    out = tmp_path / "results.csv"
    r = cli("recalc", "-c", str(cfg), "--samples", str(samples), "--out", str(out))
    assert r.returncode == 0, r.stderr
    got = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [g["period_start"] for g in got] == ["2026-11-21T08:00:00.000000Z",
                                               "2026-11-21T08:01:00.000000Z"]
    first, second = got
    assert float(first["co2_kg"]) == pytest.approx(3282.70, abs=0.005)
    assert float(first["flow_std_dry_m3_h"]) == pytest.approx(835_718.9, abs=0.05)
    assert float(first["co2_rate_t_h"]) == pytest.approx(196.9622, abs=0.00005)
    assert (first["valid"], first["flag"], first["source"], first["unit"]) == ("1", "N", "S1",
                                                                              "U1")
    assert (second["valid"], second["flag"]) == ("0", "B")  # 4 CO2 samples < 5


@pytest.mark.parametrize(("text", "message"), [
    ("time,tag,value\n", "line 1: header must be"),
    ("timestamp,tag,value\nyesterday,s1_co2,1\n", "line 2: Invalid isoformat string"),
    ("timestamp,tag,value\n2026-11-21T08:00:00,s1_co2,1\n", "line 2: timestamp "
     "'2026-11-21T08:00:00' has no UTC offset"),
    ("timestamp,tag,value,flag\n0,s1_co2,1,X\n", "line 2: unknown flag 'X'"),
    ("timestamp,tag,value\n0,s1_co2,twelve\n", "line 2: could not convert"),
    ("timestamp,tag,value\n0,s1_co2\n", "line 2: expected 3 or 4 columns, got 2"),
    ("timestamp,tag,value\n0,s1_co2,1\n1,stack9,1\n", "tags not in the plant configuration: "
     "'stack9' (line 3)"),
])
def test_bad_samples_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "s.csv"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(SamplesError, match=f"^{f}: .*{message[:20]}"):
        read_samples(f, TAGS)
    with pytest.raises(SamplesError) as exc:
        read_samples(f, TAGS)
    assert message in str(exc.value)


async def test_recalc_reproduces_what_the_live_server_stored(tmp_path: Path) -> None:
    d = plant_dict(free_port(), var_dir=str(tmp_path / "var"), minute_seconds=1.0)
    d["opcua"]["enabled"] = False
    d["web"]["enabled"] = False
    d["devices"][0]["poll_interval_s"] = 0.05
    for tag in d["devices"][0]["tags"]:  # noisy, load-following values: nothing trivial
        v = tag["sim"]["value"]
        tag["sim"] = {"min": v * 0.9, "max": v * 1.1, "noise": abs(v) * 0.01}
    cfg = parse_config(d, "test")
    runtime = Runtime(cfg)
    begin = datetime.now(UTC) - timedelta(seconds=5)
    await runtime.start()
    try:
        await asyncio.sleep(5.5)
    finally:
        await runtime.stop()
    end = datetime.now(UTC) + timedelta(seconds=5)

    h = Historian(cfg.historian.path)
    await h.start()
    try:
        stored = await h.source_minutes("S1", begin, end)
    finally:
        await h.stop()
    assert len(stored) >= 4
    assert sum(r["valid"] for r in stored) >= 3

    plant = write_config(tmp_path, d)
    samples, results = tmp_path / "samples.csv", tmp_path / "results.csv"
    r = cli("export-samples", "-c", str(plant), "--from", begin.isoformat(), "--to",
            end.isoformat(), "--out", str(samples))
    assert r.returncode == 0, r.stderr
    r = cli("recalc", "-c", str(plant), "--samples", str(samples), "--out", str(results))
    assert r.returncode == 0, r.stderr
    recalculated = {row["period_start"]: row
                    for row in csv.DictReader(results.open(encoding="utf-8"))}
    fields = ("flow_act_m3_h", "flow_std_dry_m3_h", "co2_dry_pct", "co2_mg_m3",
              "co2_rate_kg_h", "co2_kg")
    for row in stored:
        key = row["t"].isoformat(timespec="microseconds").replace("+00:00", "Z")
        again = recalculated[key]
        for f in fields:  # exactly: same bits, not approximately
            want = "" if row[f] is None else repr(row[f])
            assert again[f] == want, (key, f)
        assert (again["flag"], again["valid"]) == (row["flag"].name, str(int(row["valid"])))


def test_recalculate_without_samples_yields_nothing() -> None:
    assert list(recalculate(parse_config(plant_dict(), "test"), {})) == []


def vector_samples(path: Path, start: datetime, minutes: int,
                   co2_minutes: int | None = None) -> None:
    """12 samples a minute of the worked-example inputs; s1_co2 only in the first
    `co2_minutes` minutes of every hour when given."""
    with path.open("w", encoding="utf-8") as f:
        f.write("timestamp,tag,value\n")
        for m in range(minutes):
            for i in range(12):
                t = (start + timedelta(minutes=m, seconds=5 * i)).timestamp()
                for tag, v in TAGS.items():
                    if tag == "s1_co2" and co2_minutes is not None and m % 60 >= co2_minutes:
                        continue
                    f.write(f"{t!r},{tag},{v!r}\n")


def test_recalc_hour_level(tmp_path: Path) -> None:
    # Hour 1: 60 valid minutes → C_h 12.0 %, Q_h 835 718.9 m³/h, G_h = 12.0·1.964·835 718.9/100
    # = 196 962.2 kg/h → 196.9622 t. Hour 2: CO2 in 44 minutes only (< 45) → invalid, B.
    samples = tmp_path / "samples.csv"
    vector_samples(samples, datetime(2026, 11, 21, 8, 0, tzinfo=UTC), 120, co2_minutes=None)
    text = samples.read_text(encoding="utf-8").splitlines()
    hour2 = datetime(2026, 11, 21, 9, 44, tzinfo=UTC).timestamp()
    samples.write_text("\n".join(
        line for line in text
        if not (",s1_co2," in line and float(line.split(",")[0]) >= hour2)) + "\n",
        encoding="utf-8")
    out = tmp_path / "hours.csv"
    r = cli("recalc", "-c", str(write_config(tmp_path, plant_dict())), "--samples",
            str(samples), "--out", str(out), "--level", "hour")
    assert r.returncode == 0, r.stderr
    first, second = csv.DictReader(out.open(encoding="utf-8"))
    assert first["period_start"] == "2026-11-21T08:00:00.000000Z"
    assert float(first["co2_t"]) == pytest.approx(196.9622, abs=0.00005)
    assert float(first["co2_dry_pct"]) == 12.0
    assert float(first["flow_std_dry_m3_h"]) == pytest.approx(835_718.9, abs=0.05)
    assert (first["valid"], first["flag"], first["n_valid"]) == ("1", "N", "60")
    assert (second["valid"], second["flag"], second["n_valid"]) == ("0", "B", "44")
    assert second["co2_t"] == ""  # no substitution rule configured: no value, not a guess


def test_recalc_day_level(tmp_path: Path) -> None:
    # A plant day (Asia/Shanghai) of 24 valid hours: 24 × 196.962 230 t = 4 727.09 t.
    from server.recalc import write_period_results

    samples = tmp_path / "samples.csv"
    vector_samples(samples, datetime(2026, 11, 20, 16, 0, tzinfo=UTC), 24 * 60)
    cfg = parse_config(plant_dict(), "test")
    minutes = recalculate(cfg, read_samples(samples, TAGS))
    out = tmp_path / "days.csv"
    with out.open("w", encoding="utf-8") as f:
        assert write_period_results(f, cfg, minutes, "day") == 1
    (day,) = csv.DictReader(out.open(encoding="utf-8"))
    assert day["period_start"] == "2026-11-20T16:00:00.000000Z"  # 00:00 in Shanghai
    assert float(day["co2_t"]) == pytest.approx(4727.09, abs=0.005)
    assert (day["valid"], day["flag"], day["n_valid"], day["n_missing"]) == ("1", "N", "24", "0")
