"""The `carbonscada` command as an operator meets it: messages, exit codes, no tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.fixtures.plant import plant_dict

CARBONSCADA = str(Path(sys.executable).parent / "carbonscada")
REPO = Path(__file__).resolve().parents[2]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CARBONSCADA, *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd, check=False)


def test_check_config_accepts_the_demo_plant() -> None:
    r = run("check-config", str(REPO / "config" / "demo-plant.yaml"))
    assert r.returncode == 0, r.stderr
    assert "OK — site demo, 7 devices, 31 tags, 2 units, 2 sources, 3 alarm rules" in r.stdout


def test_check_config_names_file_key_and_problem(tmp_path: Path) -> None:
    d = plant_dict()
    d["devices"][0]["protocol"] = "modbus_tpc"
    d["units"][0]["sources"][0].pop("area_m2")
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(d), encoding="utf-8")
    r = run("check-config", str(f))
    assert r.returncode == 2
    assert f"{f}: devices[0].protocol: unknown protocol 'modbus_tpc'" in r.stderr
    assert "Traceback" not in r.stderr


def test_run_refuses_a_bad_config_before_starting_anything(tmp_path: Path) -> None:
    d = plant_dict()
    d["devices"][0]["poll_interval_s"] = -1
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(d), encoding="utf-8")
    r = run("run", "-c", str(f), cwd=tmp_path)
    assert r.returncode == 2
    assert f"{f}: devices[0].poll_interval_s: Input should be greater than 0" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "var").exists()  # nothing was created


def test_missing_config_file() -> None:
    r = run("check-config", "/nonexistent/plant.yaml")
    assert r.returncode == 2
    assert "/nonexistent/plant.yaml: (file): cannot read: No such file or directory" in r.stderr
