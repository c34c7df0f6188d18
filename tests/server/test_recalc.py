"""carbonscada recalc: worked examples, bad input, exact reproduction of live results."""

from __future__ import annotations

import asyncio
import csv
import io
import math
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from compute.plan import CalculationPlan
from model.flags import DataFlag
from model.records import PeriodRecords
from server.config import parse_plant
from server.historian import Historian
from server.recalc import SamplesError, read_samples, recalculate, recalculate_periods
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
        list(read_samples(f, TAGS))
    with pytest.raises(SamplesError) as exc:
        list(read_samples(f, TAGS))
    assert message in str(exc.value)


async def test_recalc_reproduces_what_the_live_server_stored(tmp_path: Path) -> None:
    d = plant_dict(free_port(), var_dir=str(tmp_path / "var"), minute_seconds=1.0)
    d["opcua"]["enabled"] = False
    d["web"]["enabled"] = False
    d["devices"][0]["poll_interval_s"] = 0.05
    for tag in d["devices"][0]["tags"]:  # noisy, load-following values: nothing trivial
        v = tag["sim"]["value"]
        tag["sim"] = {"min": v * 0.9, "max": v * 1.1, "noise": abs(v) * 0.01}
    plant = parse_plant(d, "test")
    cfg = plant.config
    runtime = Runtime(plant)
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


def test_recalculate_without_samples_yields_nothing(tmp_path: Path) -> None:
    f = tmp_path / "s.csv"
    f.write_text("timestamp,tag,value\n\n", encoding="utf-8")
    assert list(recalculate(parse_plant(plant_dict(), "test").plan(), f)) == []


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
    assert (first["valid"], first["flag"], first["n_valid_min"]) == ("1", "N", "60")
    assert (second["valid"], second["flag"], second["n_valid_min"]) == ("0", "B", "44")
    assert second["co2_t"] == ""  # no substitution rule configured: no value, not a guess


def test_recalc_day_level(tmp_path: Path) -> None:
    # A plant day (Asia/Shanghai) of 24 valid hours: 24 × 196.962 230 t = 4 727.09 t.
    from server.recalc import write_period_results

    samples = tmp_path / "samples.csv"
    vector_samples(samples, datetime(2026, 11, 20, 16, 0, tzinfo=UTC), 24 * 60)
    plant = parse_plant(plant_dict(), "test")
    plan = plant.plan()
    minutes = recalculate(plan, samples)
    out = tmp_path / "days.csv"
    with out.open("w", encoding="utf-8") as f:
        assert write_period_results(f, plan, minutes, "day") == 1
    (day,) = csv.DictReader(out.open(encoding="utf-8"))
    assert day["period_start"] == "2026-11-20T16:00:00.000000Z"  # 00:00 in Shanghai
    assert float(day["co2_t"]) == pytest.approx(4727.09, abs=0.005)
    assert (day["valid"], day["flag"], day["n_valid_h"], day["n_missing_h"]) == (
        "1", "N", "24", "0")


async def test_live_hours_equal_recalculated_hours_across_a_restart(tmp_path: Path) -> None:
    """Hours of 30 s (0.5 s minutes): the server runs, stops, runs again on the same
    historian; every hour it stored equals what recalc gives from the exported samples."""
    d = plant_dict(free_port(), var_dir=str(tmp_path / "var"), minute_seconds=0.5)
    d["clock"]["min_samples_per_minute"] = 3
    d["opcua"]["enabled"] = False
    d["web"]["enabled"] = False
    dev = d["devices"][0]
    dev["poll_interval_s"] = 0.05
    for tag in dev["tags"]:  # noisy, load-following values: nothing trivial
        v = tag["sim"]["value"]
        tag["sim"] = {"min": v * 0.9, "max": v * 1.1, "noise": abs(v) * 0.01}
    dev["tags"] += [
        {"id": "u1_coal", "register": 30, "unit": "t/h", "sim": {"min": 90.0, "max": 110.0,
                                                                "noise": 1.0}},
        {"id": "u1_aux_kwh", "register": 32, "type": "float64", "unit": "kWh",
         "sim": {"value": 36_000.0, "counter_start": 1000.0}}]  # 10 kWh a second
    d["factor_table"] = str(Path(__file__).resolve().parents[2] / "config" / "factors.yaml")
    d["reconciliation"] = {"limit_pct": 5.0}
    d["units"][0]["sources"][0]["substitution"] = {"rule": "mrr_mean_2sigma", "lookback_h": 3}
    d["units"][0]["streams"] = [
        {"id": "U1_coal", "kind": "solid_fuel", "factors": "demo_coal",
         "rate_per_h": {"tag": "u1_coal"}},
        {"id": "U1_aux", "kind": "electricity", "factors": "grid_electricity",
         "counter": {"tag": "u1_aux_kwh", "rollover_count": 1e9, "max_jump_per_h": 1e6,
                     "quantity_per_count": 0.001}}]
    loaded = parse_plant(d, "test")
    cfg, plan = loaded.config, loaded.plan()
    begin = datetime.now(UTC) - timedelta(seconds=60)
    for run_s in (20.0, 45.0):  # 65 s: at least two hour boundaries
        runtime = Runtime(loaded)
        await runtime.start()
        try:
            await asyncio.sleep(run_s)
        finally:
            await runtime.stop()
    end = datetime.now(UTC) + timedelta(seconds=5)

    h = Historian(cfg.historian.path)
    await h.start()
    try:
        stored = await h.periods("hour", begin, end)
    finally:
        await h.stop()
    assert len(stored) >= 2
    assert any(s.valid for rec in stored for s in rec.sources)

    plant = write_config(tmp_path, d)
    samples, results = tmp_path / "samples.csv", tmp_path / "hours.csv"
    r = cli("export-samples", "-c", str(plant), "--from", begin.isoformat(), "--to",
            end.isoformat(), "--out", str(samples))
    assert r.returncode == 0, r.stderr
    r = cli("recalc", "-c", str(plant), "--samples", str(samples), "--out", str(results),
            "--level", "hour")
    assert r.returncode == 0, r.stderr
    rows = {row["period_start"]: row for row in csv.DictReader(results.open(encoding="utf-8"))}
    for rec in stored:
        (s,) = rec.sources
        row = rows[s.t.isoformat(timespec="microseconds").replace("+00:00", "Z")]
        for f in ("co2_dry_pct", "flow_std_dry_m3_h", "co2_rate_kg_h", "co2_t",
                  "co2_measured_t"):  # exactly: same bits, not approximately
            value = getattr(s, f)
            assert row[f] == ("" if math.isnan(value) else repr(value)), (s.t, f)
        assert (row["valid"], row["flag"], row["n_valid_min"], row["substituted"]) == (
            str(int(s.valid)), s.flag.name, str(s.n_valid), str(int(s.substituted)))
    # Streams, units and the allowance position too, in full (the historian gives a
    # period's records in the order of their ids).
    again = {p.t: p for p in recalculate_periods(plan, recalculate(plan, samples))
             if p.level == "hour"}
    for rec in stored:
        want = again[rec.t]
        assert repr(rec.sources) == repr(want.sources)
        assert repr(sorted(rec.streams, key=lambda x: x.stream)) == repr(
            sorted(want.streams, key=lambda x: x.stream))
        assert (repr(rec.units), repr(rec.allowance)) == (repr(want.units),
                                                          repr(want.allowance))


# ------------------------------------------------------------- reading fast, in blocks


def reference_rows(path: Path) -> list[tuple[float, str, float, int]]:
    """SAMPLES.csv read row by row with the csv module: what the tokenizer must give."""
    out = []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        next(reader)
        for row in reader:
            if not row or not "".join(row).strip():
                continue
            text = row[0].strip()
            try:
                t = float(text)
            except ValueError:
                t = datetime.fromisoformat(text).timestamp()
            letter = row[3].strip() if len(row) == 4 and row[3].strip() else "N"
            out.append((t, row[1].strip(), float(row[2]), int(DataFlag[letter])))
    return out


TIME_FORMS = [
    lambda t: t.isoformat(timespec="microseconds"),  # as export-samples writes
    lambda t: t.astimezone(timezone(timedelta(hours=8))).isoformat(),
    lambda t: t.isoformat().replace("+00:00", "Z"),
    lambda t: t.isoformat(sep=" ", timespec="milliseconds"),
    lambda t: t.astimezone(timezone(timedelta(hours=-3, minutes=-30))).isoformat(
        timespec="minutes") if t.second == 0 and t.microsecond == 0 else t.isoformat(),
    lambda t: repr(t.timestamp()),
    lambda t: f"{t.timestamp():.3f}",
    lambda t: f"{t.timestamp():e}",
    lambda t: f" {t.isoformat()} ",
    lambda t: f'"{t.isoformat()}"',  # quoted: the csv module's path
]
VALUE_FORMS = [repr, lambda v: f"{v:.2f}", lambda v: f"{v:e}", lambda v: f"+{abs(v)!r}",
               lambda v: f" {v!r}", lambda v: "nan", lambda v: f"{v:.0f}.", lambda v: "1_000.5"]


def test_fast_reading_equals_the_csv_module(tmp_path: Path) -> None:
    import random

    rnd = random.Random(7)
    t0 = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
    lines = ["timestamp,tag,value,flag"]
    for i in range(5000):
        t = t0 + timedelta(seconds=i // 6, microseconds=rnd.choice([0, 0, 1, 250_000, 999_999]))
        tag = rnd.choice(list(TAGS))
        v = rnd.uniform(-1e3, 1e6) * rnd.choice([1.0, 1e-9, 1e12])
        flag = rnd.choice(["", "N", "D", " B", "F "])
        row = [rnd.choice(TIME_FORMS)(t), rnd.choice([tag, f" {tag}", f"{tag}\t"]),
               rnd.choice(VALUE_FORMS)(v)]
        lines.append(",".join([*row, flag] if flag or rnd.random() < 0.5 else row))
        if rnd.random() < 0.01:
            lines.append(rnd.choice(["", " , ,", ","]))  # blank rows are skipped
    f = tmp_path / "s.csv"
    f.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    got = [(t, list(TAGS)[g], v, fl) for b in read_samples(f, TAGS) for t, g, v, fl in zip(
        b.t_s.tolist(), b.tag.tolist(), b.value.tolist(), b.flag.tolist(), strict=True)]
    want = reference_rows(f)
    assert len(got) == len(want) == 5000
    for g, w in zip(got, want, strict=True):  # bit for bit; NaN is NaN
        assert repr(g) == repr(w)


def write_rows(path: Path, rows: list[str]) -> None:
    path.write_text("timestamp,tag,value\n" + "".join(r + "\n" for r in rows),
                    encoding="utf-8")


def test_blocks_give_the_same_minutes_as_one_block(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    samples = tmp_path / "samples.csv"
    vector_samples(samples, datetime(2026, 11, 21, 8, 0, tzinfo=UTC), 30, co2_minutes=20)
    lines = samples.read_text(encoding="utf-8").splitlines()[1:]
    # the rows of each minute shuffled: the file is in time order only minute by minute
    import random

    rnd = random.Random(3)
    by_minute = [lines[i:i + 72] for i in range(0, len(lines), 72)]
    for m in by_minute:
        rnd.shuffle(m)
    write_rows(samples, [r for m in by_minute for r in m])
    plant = parse_plant(plant_dict(), "test")
    cfg, plan = plant.config, plant.plan()
    whole = io.StringIO()
    import server.recalc as rc

    rc.write_minute_results(whole, cfg, recalculate(plan, samples))
    monkeypatch.setattr(rc, "BLOCK_BYTES", 4000)  # ~60 rows: minutes span blocks
    monkeypatch.setattr(rc, "MAX_BATCH_MINUTES", 7)
    blocks = io.StringIO()
    rc.write_minute_results(blocks, cfg, recalculate(plan, samples))
    assert blocks.getvalue() == whole.getvalue()
    assert whole.getvalue().count("\n") == 31  # header + 30 minutes of S1


def test_rows_far_out_of_time_order_are_refused(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import server.recalc as rc

    monkeypatch.setattr(rc, "BLOCK_BYTES", 200)
    f = tmp_path / "s.csv"
    # blocks of ~10 rows: minutes 0–9 are calculated once the rows of minute 10 … come
    write_rows(f, [f"{60.0 * m + 1},s1_co2,12.0" for m in range(40)] + ["5.0,s1_co2,12.0"])
    with pytest.raises(SamplesError, match=f"^{f}: line 42: sample at 1970-01-01T00:00:05"
                       r"\+00:00 is in a minute already calculated: rows must be in time "
                       r"order \(as export-samples writes them\)$"):
        list(recalculate(parse_plant(plant_dict(), "test").plan(), f))


def test_a_failed_recalc_leaves_no_results_file(tmp_path: Path) -> None:
    f = tmp_path / "s.csv"
    write_rows(f, ["0,s1_co2,12.0", "1,s1_co2,twelve"])
    out = tmp_path / "results.csv"
    r = cli("recalc", "-c", str(write_config(tmp_path, plant_dict())), "--samples", str(f),
            "--out", str(out))
    assert r.returncode == 2 and "line 3: could not convert" in r.stderr
    assert not out.exists() and not (tmp_path / "results.csv.part").exists()


def test_recalc_month_and_year_levels(tmp_path: Path) -> None:
    # Two full plant days (2026-11-20 and -21, Asia/Shanghai) of the worked example, with
    # Q_sd unrounded: 1 080 000 · 273.15/323.15 · 100 825/101 325 · 0.92 = 835 718.9418 m³/h,
    # G = 12.0 · 1.964 · 835 718.9418 / 100 = 196 962.2402 kg/h; 48 h → 9 454.1875 t.
    # November has 30 days: 28 × 24 = 672 hours missing; the month and year are incomplete.
    from server.recalc import write_period_results

    samples = tmp_path / "samples.csv"
    vector_samples(samples, datetime(2026, 11, 19, 16, 0, tzinfo=UTC), 2 * 24 * 60)
    plant = parse_plant(plant_dict(), "test")
    plan = plant.plan()
    for level, start, missing in (("month", "2026-10-31T16:00:00.000000Z", 672),
                                  ("year", "2025-12-31T16:00:00.000000Z", (365 - 2) * 24)):
        out = tmp_path / f"{level}.csv"
        with out.open("w", encoding="utf-8") as f:
            assert write_period_results(f, plan, recalculate(plan, samples), level) == 1
        (row,) = csv.DictReader(out.open(encoding="utf-8"))
        assert row["period_start"] == start
        assert float(row["co2_t"]) == pytest.approx(9454.1875, abs=0.00005)
        assert float(row["co2_measured_t"]) == pytest.approx(9454.1875, abs=0.00005)
        assert (row["valid"], row["flag"], row["n_valid_d"], row["n_missing_h"]) == (
            "0", "B", "2", str(missing))
        assert row["co2_dry_pct"] == ""  # months and years are sums only


# ------------------------------------------- stream, unit and allowance rows (issue 16)


def written(plan: CalculationPlan, records: Sequence[PeriodRecords],
            level: str) -> dict[str, list[dict[str, str]]]:
    """The four kinds of rows write_records gives for `records`, read back as CSV."""
    from server.recalc import ResultFiles, write_records

    bufs = {k: io.StringIO() for k in ("sources", "streams", "units", "allowance")}
    n = write_records(ResultFiles(**bufs), plan, records, level)
    out = {k: list(csv.DictReader(io.StringIO(b.getvalue()))) for k, b in bufs.items()}
    assert n == {k: len(v) for k, v in out.items()}
    return out


def f(row: dict[str, str], name: str) -> float:
    return float(row[name])


def test_the_worked_day_in_hour_rows() -> None:
    # tests/compute/test_periods.py's worked day: C 12.0 % (hours 1, 2: 12.5, 13.0 %), Q
    # 835 718.9 m³/h, 600 MW, coal 100 t/h; hour 3 an instrument fault (D) substituted by
    # mrr_mean_2sigma over hours 0–2; the aux meter counts 1 000 kWh a minute.
    from tests.compute.test_periods import DAY0, config, printed, worked_day

    rows = written(config(), worked_day(), "hour")
    src, streams = rows["sources"], rows["streams"]
    assert len(src) == 25 and src[0]["period_start"] == "2025-12-31T16:00:00.000000Z"
    assert f(src[0], "co2_t") == printed(196.96223, 5) and src[0]["n_valid_min"] == "60"
    # Hour 3: C = mean(12.0, 12.5, 13.0) + 2σ = 12.5 + 2 · 0.5 = 13.5 %; Q σ = 0 → 835 718.9;
    # co2_t = 13.5 · 1.964 · 835 718.9 / 100 / 1000 = 221.58251 t, from the row's own columns.
    sub = src[3]
    assert (sub["flag"], sub["valid"], sub["substituted"], sub["substitution_rule"]) == (
        "D", "0", "1", "mrr_mean_2sigma")
    assert f(sub, "substitute_co2_dry_pct") == pytest.approx(13.5, abs=1e-9)
    assert f(sub, "substitute_flow_std_dry_m3_h") == pytest.approx(835_718.9, abs=1e-6)
    assert f(sub, "co2_t") == printed(221.58251, 5)
    assert f(sub, "substitute_co2_dry_pct") * 1.964 * f(sub, "substitute_flow_std_dry_m3_h") / (
        1e5) == pytest.approx(f(sub, "co2_t"), rel=1e-12)
    assert src[0]["substitute_co2_dry_pct"] == "" and src[4]["substituted"] == "0"
    # Coal of hour 7: 100 t · 17.2 GJ/t · 0.03085 tC/GJ · 0.99 · 44/12 = 192.61506 t CO2, by
    # version demo-coal-2020-01; only the factors its formula uses are filled in.
    coal = [r for r in streams if r["stream"] == "U1_coal"][7]
    assert datetime(2025, 12, 31, 16, tzinfo=UTC) == DAY0  # hour 7 is 07:00–08:00 Shanghai
    assert (coal["period_start"], coal["period_end"]) == ("2025-12-31T23:00:00.000000Z",
                                                          "2026-01-01T00:00:00.000000Z")
    assert (coal["method"], coal["quantity_unit"], coal["factor_version"], coal["formula"]) == (
        "ncv_cc_of", "t", "demo-coal-2020-01", "quantity*ncv*cc_tc_gj*of*44/12")
    assert f(coal, "quantity") == pytest.approx(100.0, rel=1e-12)
    assert (f(coal, "ncv_gj_t"), f(coal, "cc_tc_gj"), f(coal, "of")) == (17.2, 0.03085, 0.99)
    assert coal["ef_tco2_mwh"] == coal["ncv_gj_1e4m3"] == coal["c_ar_tc_t"] == ""
    assert f(coal, "co2_t") == printed(192.61506, 5)
    assert f(coal, "quantity") * f(coal, "ncv_gj_t") * f(coal, "cc_tc_gj") * f(coal, "of") * (
        44 / 12) == pytest.approx(f(coal, "co2_t"), rel=1e-12)
    assert (coal["n_valid_min"], coal["n_valid_readings"]) == ("60", "")
    # Aux meter, hour 1: 60 deltas of 1 000 kWh = 60 MWh · 0.5703 t/MWh = 34.218 t.
    aux = [r for r in streams if r["stream"] == "U1_aux"][1]
    assert f(aux, "quantity") == pytest.approx(60.0, rel=1e-12)
    assert (aux["quantity_unit"], f(aux, "ef_tco2_mwh")) == ("MWh", 0.5703)
    assert f(aux, "co2_t") == printed(34.218, 3) and aux["n_valid_min"] == ""
    assert aux["factor_version"] == "grid-cn-0.5703" and aux["ncv_gj_t"] == ""
    # Unit, hour 0: 196.96223 t / (600 MW · 1 h) = 0.3282704 t/MWh over 60 output minutes.
    u0 = rows["units"][0]
    assert (u0["unit"], f(u0, "output_mwh"), u0["intensity_n_valid_min"]) == ("U1", 600.0, "60")
    assert f(u0, "co2_cems_t") == printed(196.96223, 5)
    assert f(u0, "co2_factor_t") == printed(192.61506, 5)  # coal only: the aux is indirect
    assert f(u0, "intensity_t_mwh") == printed(0.3282704, 7)
    # Allowance at the end of hour 24 (00:00–01:00 of day 2): ytd = 4 776.33409 + 196.96223
    # = 4 973.29632 t of 1 000 000 t; forecast 4 973.29632 + 4 776.33409 · 363.958333 =
    # 1 743 359.890 t, 743 359.890 t short at 80 CNY/t = 59 468 791.2 CNY.
    a = rows["allowance"][-1]
    assert (a["period_start"], a["position_at"], a["site"]) == (
        "2026-01-01T16:00:00.000000Z", "2026-01-01T17:00:00.000000Z", "testsite")
    assert f(a, "ytd_t") == printed(4973.29632, 5) and f(a, "annual_t") == 1_000_000.0
    assert f(a, "used_pct") == printed(0.4973296, 7)
    assert f(a, "headroom_t") == printed(995_026.70368, 5)
    assert f(a, "days_left_d") == pytest.approx(363.958333, rel=1e-8)
    assert f(a, "forecast_year_end_t") == printed(1_743_359.890, 3)
    assert f(a, "forecast_shortfall_t") == printed(743_359.890, 3)
    assert f(a, "shortfall_cost_cny") == printed(59_468_791.2, 1)
    assert rows["allowance"][0]["forecast_year_end_t"] == ""  # no closed day yet


def test_the_worked_day_in_day_and_month_rows() -> None:
    from tests.compute.test_periods import config, printed, worked_day

    day = written(config(), worked_day(), "day")
    (s1,) = day["sources"]
    # 21 × 196.96223 + 205.16899 + 213.37575 + substituted 221.58251 = 4 776.33409 t
    assert f(s1, "co2_t") == printed(4776.33409, 5)
    assert (s1["n_valid_h"], s1["n_substituted_h"], s1["n_missing_h"]) == ("23", "1", "0")
    assert s1["substitute_co2_dry_pct"] == ""  # a day's hours carry their own
    coal, aux = day["streams"]
    # 24 h × 100 t/h = 2 400 t; 2 400 · 17.2 · 0.03085 · 0.99 · 44/12 = 4 622.76144 t
    assert f(coal, "quantity") == pytest.approx(2400.0, rel=1e-12)
    assert (coal["n_valid_h"], coal["factor_version"]) == ("24", "demo-coal-2020-01")
    assert f(coal, "co2_t") == printed(4622.76144, 5)
    # 1 438 MWh × 0.5703 t/MWh = 820.0914 t (the meter's jump left out)
    assert f(aux, "quantity") == pytest.approx(1438.0, rel=1e-12)
    assert f(aux, "co2_t") == printed(820.0914, 4) and "implausible_jump" in aux["note"]
    (u1,) = day["units"]
    assert f(u1, "co2_cems_t") == printed(4776.33409, 5)
    assert f(u1, "co2_factor_t") == printed(4622.76144, 5)
    assert f(u1, "output_mwh") == pytest.approx(14_400.0, rel=1e-12)
    # (4 776.33409 − 4 622.76144) / 4 622.76144 · 100 = 3.32210 % < 5 %
    assert f(u1, "reconciliation_diff_pct") == printed(3.32210, 5)
    assert u1["reconciliation_exceeded"] == "0"
    # At the end of the day's last hour: ytd 4 776.33409 t; 24 h of 8 760 gone, 364 days left.
    (a,) = day["allowance"]
    assert (a["period_start"], a["position_at"]) == ("2025-12-31T16:00:00.000000Z",
                                                     "2026-01-01T16:00:00.000000Z")
    assert f(a, "ytd_t") == printed(4776.33409, 5)
    assert f(a, "headroom_t") == printed(1_000_000 - 4776.33409, 5)
    assert f(a, "days_left_d") == pytest.approx(364.0, rel=1e-12)

    month = written(config(), worked_day(), "month")
    (s1,) = month["sources"]
    # January has 31 days, one of them recorded: incomplete (B), 30 × 24 = 720 h missing.
    assert f(s1, "co2_t") == printed(4776.33409, 5)
    assert (s1["valid"], s1["flag"], s1["n_valid_d"], s1["n_missing_h"]) == ("0", "B", "1",
                                                                            "720")
    coal, aux = month["streams"]
    assert f(coal, "quantity") == pytest.approx(2400.0, rel=1e-12)
    assert (coal["n_valid_d"], coal["valid"], f(coal, "ncv_gj_t")) == ("1", "0", 17.2)
    assert f(coal, "co2_t") == printed(4622.76144, 5)
    (u1,) = month["units"]
    assert f(u1, "reconciliation_diff_pct") == printed(3.32210, 5)
    assert (u1["valid"], u1["flag"]) == ("0", "B")
    (a,) = month["allowance"]  # the position at the end of the month's last closed hour
    assert (a["period_start"], a["position_at"]) == ("2025-12-31T16:00:00.000000Z",
                                                     "2026-01-01T16:00:00.000000Z")
    assert f(a, "ytd_t") == printed(4776.33409, 5)


def test_recalc_writes_stream_unit_and_allowance_files(tmp_path: Path) -> None:
    # Four hours of the worked-example minute with coal 100 t/h; hour 3's CO2 analyser flags
    # every sample D. mrr_mean_2sigma over hours 0–2 (12.0 % each, σ 0): the substitute is
    # C 12.0 %, Q 835 718.9418 m³/h → 12.0 · 1.964 · 835 718.9418 / 1e5 = 196.96224 t.
    d = plant_dict()
    d["devices"][0]["tags"].append(
        {"id": "u1_coal", "register": 30, "unit": "t/h", "sim": {"value": 100.0}})
    d["factor_table"] = str(Path(__file__).resolve().parents[2] / "config" / "factors.yaml")
    d["reconciliation"] = {"limit_pct": 5.0}
    d["units"][0]["sources"][0]["substitution"] = {"rule": "mrr_mean_2sigma", "lookback_h": 3}
    d["units"][0]["streams"] = [{"id": "U1_coal", "kind": "solid_fuel", "factors": "demo_coal",
                                 "rate_per_h": {"tag": "u1_coal"}}]
    start = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
    samples = tmp_path / "samples.csv"
    with samples.open("w", encoding="utf-8") as fh:
        fh.write("timestamp,tag,value,flag\n")
        for m in range(4 * 60):
            for i in range(12):
                t = (start + timedelta(minutes=m, seconds=5 * i)).timestamp()
                for tag, v in {**TAGS, "u1_coal": 100.0}.items():
                    flag = "D" if tag == "s1_co2" and m >= 180 else "N"
                    fh.write(f"{t!r},{tag},{v!r},{flag}\n")
    out = tmp_path / "RESULTS.csv"
    r = cli("recalc", "-c", str(write_config(tmp_path, d)), "--samples", str(samples),
            "--out", str(out), "--level", "hour")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.glob("RESULTS*")) == [
        "RESULTS-allowance.csv", "RESULTS-streams.csv", "RESULTS-units.csv", "RESULTS.csv"]

    def read(name: str) -> list[dict[str, str]]:
        return list(csv.DictReader((tmp_path / name).open(encoding="utf-8")))

    src = read("RESULTS.csv")
    assert [s["n_valid_min"] for s in src] == ["60", "60", "60", "0"]
    sub = src[3]
    assert (sub["flag"], sub["substituted"], sub["substitution_rule"]) == (
        "D", "1", "mrr_mean_2sigma")
    assert f(sub, "substitute_co2_dry_pct") == pytest.approx(12.0, abs=1e-9)
    assert f(sub, "substitute_flow_std_dry_m3_h") == pytest.approx(835_718.9418, abs=5e-5)
    assert f(sub, "co2_t") == pytest.approx(196.96224, abs=5e-6)
    streams = read("RESULTS-streams.csv")
    # November 2026: version demo-coal-2026-11 (NCV 17.0 GJ/t) is in force;
    # 100 t · 17.0 · 0.03085 · 0.99 · 44/12 = 190.37535 t
    assert [(s["stream"], s["factor_version"], s["ncv_gj_t"]) for s in streams] == [
        ("U1_coal", "demo-coal-2026-11", "17.0")] * 4
    assert "coal analysis 2026-11" in streams[0]["factor_source"]
    assert all(f(s, "co2_t") == pytest.approx(190.37535, abs=5e-6) for s in streams)
    units = read("RESULTS-units.csv")
    assert f(units[3], "co2_cems_t") == pytest.approx(196.96224, abs=5e-6)  # the substitute
    allowance = read("RESULTS-allowance.csv")
    assert [a["position_at"] for a in allowance] == [
        (start + timedelta(hours=h)).isoformat(timespec="microseconds").replace("+00:00", "Z")
        for h in (1, 2, 3, 4)]


async def test_the_historian_keeps_a_substituted_hours_concentration_and_flow(
        tmp_path: Path) -> None:
    # The worked day's hour 3 (substitute C 13.5 %, Q 835 718.9 m³/h) stored and read back;
    # a historian file from before these columns gains them (NULL → NaN for its old rows).
    import sqlite3

    from tests.compute.test_periods import worked_day

    hours = [r for r in worked_day() if r.level == "hour"][:5]
    path = tmp_path / "h.sqlite"
    old = Historian(path)
    await old.start()
    await old.stop()
    db = sqlite3.connect(path)
    for lv in ("hour", "day"):
        for c in ("substitute_co2_dry_pct", "substitute_flow_std_dry_m3_h"):
            db.execute(f"ALTER TABLE source_{lv} DROP COLUMN {c}")
    db.execute("INSERT INTO source_hour (source, t_ms, valid, flag, n_valid, substituted, "
               "substitution_rule, n_substituted, n_missing, substitution_note) VALUES "
               "('S1', 0, 0, 'B', 0, 0, '', 0, 1, '')")
    db.execute("INSERT INTO period (level, t_ms, t_end_ms) VALUES ('hour', 0, 3600000)")
    db.commit()
    db.close()
    h = Historian(path)
    await h.start()
    try:
        for rec in hours:
            await h.on_period(rec)
        got = await h.periods("hour", hours[0].t, hours[-1].t_end)
        (first,) = (await h.periods("hour", datetime(1970, 1, 1, tzinfo=UTC),
                                    datetime(1970, 1, 1, 1, tzinfo=UTC)))[0].sources
    finally:
        await h.stop()
    sub = got[3].sources[0]
    assert sub.substitute_co2_dry_pct == pytest.approx(13.5, abs=1e-9)
    assert sub.substitute_flow_std_dry_m3_h == pytest.approx(835_718.9, abs=1e-6)
    assert repr([r.sources for r in got]) == repr([r.sources for r in hours])
    assert math.isnan(first.substitute_co2_dry_pct)
