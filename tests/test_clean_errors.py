"""Start-up failures and faults as an operator meets them: one line, no library traceback.

Each test runs the real `carbonscada run` process (issue 11): a port already bound by the
test, a missing factor table, a 9 KB URL against a running server, and a Modbus
simulator process frozen with SIGSTOP while the server polls it.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from drivers.config import ModbusTagConfig
from drivers.modbus_sim import registers
from tests.conftest import free_port
from tests.fixtures.plant import VECTOR, plant_dict
from tests.test_e2e import Plant, start_plant

pytestmark = pytest.mark.reliability

CARBONSCADA = str(Path(sys.executable).parent / "carbonscada")
REPO = Path(__file__).resolve().parent.parent
FAST_SIM = REPO / "bench" / "fast_modbus_sim.py"
MINUTE_S = 2.0


def config(tmp: Path) -> dict[str, Any]:
    """The test plant on free ports, 2-second minutes, its historian in tmp/var."""
    return plant_dict(free_port(), opcua_port=free_port(), web_port=free_port(),
                      var_dir=str(tmp / "var"), minute_seconds=MINUTE_S)


def run_cli(cfg: dict[str, Any], tmp: Path) -> subprocess.CompletedProcess[str]:
    """`carbonscada run -c tmp/plant.yaml` until it exits (it is expected to fail)."""
    path = tmp / "plant.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return subprocess.run([CARBONSCADA, "run", "-c", str(path)], capture_output=True,
                          text=True, timeout=60, cwd=tmp, check=False)


@pytest.fixture
def bound_port() -> Iterator[int]:
    """A loopback port this test listens on, so the server cannot."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def error_lines(r: subprocess.CompletedProcess[str]) -> list[str]:
    """The lines of stderr that are not log records (log records start with a year)."""
    return [line for line in r.stderr.splitlines() if line[:2] != "20"]


def test_web_port_in_use_is_one_line_naming_the_web_server(tmp_path: Path,
                                                           bound_port: int) -> None:
    cfg = config(tmp_path)
    cfg["web"]["port"] = bound_port
    r = run_cli(cfg, tmp_path)
    assert r.returncode == 2, r.stderr
    out = r.stdout + r.stderr
    assert "Traceback" not in out
    assert error_lines(r) == [f"carbonscada: error: web HMI: cannot listen on "
                              f"http://127.0.0.1:{bound_port}/: address already in use"]
    assert out.count("already in use") == 1


def test_opcua_port_in_use_is_one_line_naming_the_opcua_server(tmp_path: Path,
                                                               bound_port: int) -> None:
    cfg = config(tmp_path)
    cfg["opcua"]["endpoint"] = f"opc.tcp://127.0.0.1:{bound_port}"
    r = run_cli(cfg, tmp_path)
    assert r.returncode == 2, r.stderr
    out = r.stdout + r.stderr
    assert "Traceback" not in out
    assert error_lines(r) == [f"carbonscada: error: OPC UA: cannot listen on "
                              f"opc.tcp://127.0.0.1:{bound_port}: address already in use"]
    assert out.count("already in use") == 1  # not asyncua's line as well


def test_missing_factor_table_names_plant_file_key_and_path(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    cfg["factor_table"] = "tables/factors.yaml"
    r = run_cli(cfg, tmp_path)
    assert r.returncode == 2, r.stderr
    tried = tmp_path / "tables" / "factors.yaml"
    assert error_lines(r) == [f"carbonscada: error: {tmp_path / 'plant.yaml'}: factor_table: "
                              f"cannot read {tried}: No such file or directory"]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "var").exists()  # nothing was started


async def _http(port: int, request: bytes) -> bytes:
    """Send raw bytes to the HMI port; the whole answer (the server closes after it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def test_a_9_kb_url_is_refused_with_a_4xx_and_one_log_line(tmp_path: Path) -> None:
    plant = await start_plant(config(tmp_path), tmp_path)
    try:
        await plant.wait_for_line(r"carbonscada running", timeout=60)
        port = plant.config["web"]["port"]
        long_url = b"GET /api/v1/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        bad_header = b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n"
        answers = [await _http(port, long_url), await _http(port, bad_header)]
        ok = await _http(port, b"GET /api/v1/site HTTP/1.1\r\nHost: x\r\n"
                               b"Connection: close\r\n\r\n")
        await asyncio.sleep(0.5)  # let the server write its log lines
    finally:
        status = await plant.stop()
    assert status == 0
    for answer in answers:
        code = int(answer.split(b" ", 2)[1])
        assert 400 <= code < 500, answer[:200]
    assert ok.startswith(b"HTTP/1.1 200"), ok[:200]
    out = "".join(plant.lines)
    assert "Traceback" not in out
    bad = [line for line in plant.lines if "bad HTTP request" in line]
    assert len(bad) == 2, out
    assert all("WARNING" in line and "from 127.0.0.1" in line for line in bad), bad
    assert len(out.splitlines()) < 20, out  # start, the two warnings, stop: no dumps


class FrozenSim:
    """bench/fast_modbus_sim.py in its own process, serving the S2 stack's registers."""

    def __init__(self, device: dict[str, Any], values: dict[str, float]) -> None:
        regs: dict[int, int] = {}
        for tag in device["tags"]:
            t = ModbusTagConfig.model_validate(tag)
            for i, r in enumerate(registers(t, values[t.id])):
                regs[t.address + i] = r
        data = b"".join(regs.get(i, 0).to_bytes(2, "big") for i in range(max(regs) + 1))
        self.proc = subprocess.Popen([sys.executable, str(FAST_SIM)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"endpoints": 1,
                                          "tables": [[1, 3, 0, data.hex()]]}) + "\n")
        self.proc.stdin.flush()
        self.port = int(json.loads(self.proc.stdout.readline())["ports"][0])

    def close(self) -> None:
        """Thaw and stop the simulator (closing its stdin ends it)."""
        os.kill(self.proc.pid, signal.SIGCONT)
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def two_stack_config(tmp: Path) -> tuple[dict[str, Any], FrozenSim]:
    """Unit U1 on the in-process simulator; unit U2 on a real device: a separate process."""
    cfg = config(tmp)
    dev = copy.deepcopy(cfg["devices"][0])
    values = {"velocity": VECTOR["velocity"], "temp": VECTOR["temp"],
              "static": VECTOR["static"], "moisture": VECTOR["moisture_pct"],
              "co2": VECTOR["co2"], "power": 600.0}
    for tag in dev["tags"]:
        tag["id"] = tag["id"].replace("s1_", "s2_").replace("u1_", "u2_")
        tag.pop("sim")
    sim = FrozenSim(dev, {t["id"]: values[t["id"].split("_", 1)[1]] for t in dev["tags"]})
    # timeout 0.3 s: several silent polls fit in the freeze
    dev.update(id="cems2", simulate=False, port=sim.port, timeout_s=0.3)
    cfg["devices"].append(dev)
    unit = copy.deepcopy(cfg["units"][0])
    unit.update(id="U2", name="Unit 2", name_zh="2号机组")
    unit["output"]["power_mw"]["tag"] = "u2_power"
    source = unit["sources"][0]
    source.update(id="S2", name="Stack 2", name_zh="2号烟囱")
    for spec in source["inputs"].values():
        if "tag" in spec:
            spec["tag"] = spec["tag"].replace("s1_", "s2_")
    cfg["units"].append(unit)
    return cfg, sim


def minutes(var: Path, table: str, key: str, ident: str) -> list[tuple[int, str, int]]:
    """(t_ms, flag, valid) of every stored minute of one source, or (t_ms, flag, 1) of a tag."""
    valid = "valid" if table == "source_minute" else "1"
    with sqlite3.connect(f"file:{var / 'historian.sqlite'}?mode=ro", uri=True) as db:
        return db.execute(f"SELECT t_ms, flag, {valid} FROM {table} WHERE {key} = ?"
                          " ORDER BY t_ms", (ident,)).fetchall()


async def test_a_frozen_device_is_flagged_logged_once_and_recovers(tmp_path: Path) -> None:
    cfg, sim = two_stack_config(tmp_path)
    plant: Plant | None = None
    try:
        plant = await start_plant(cfg, tmp_path)
        await plant.wait_for_line(r"first minute", timeout=60)
        await asyncio.sleep(2 * MINUTE_S)
        os.kill(sim.proc.pid, signal.SIGSTOP)  # the device hangs: the kernel still accepts
        await asyncio.sleep(4 * MINUTE_S)
        frozen_lines = len(plant.lines)
        os.kill(sim.proc.pid, signal.SIGCONT)
        thawed_ms = time.time() * 1000
        await plant.wait_for_line(r"cems2 .* back online", timeout=20)
        for _ in range(100):  # until a minute begun after the thaw is stored (≤ 10 s)
            if [t for t, *_ in minutes(tmp_path / "var", "source_minute", "source", "S2")
                    if t >= thawed_ms]:
                break
            await asyncio.sleep(0.1)
        assert plant.proc.returncode is None  # the server kept running throughout
        status = await plant.stop()
    finally:
        if plant is not None:
            await plant.stop()
        sim.close()
    out = "".join(plant.lines)
    assert status == 0, out
    assert "Traceback" not in out
    cems2 = [line for line in plant.lines if "cems2" in line]
    faults = [line for line in cems2 if "back online" not in line]
    # the fault once, its recovery once: not once per poll, per retry or per frame
    assert len(faults) == 1, out
    assert "WARNING drivers: device cems2" in faults[0] and "no reply" in faults[0]
    assert sum("back online" in line for line in cems2) == 1
    assert "pymodbus" not in out and ">>>>>" not in out, out
    assert frozen_lines < 15, out  # start-up lines and the one fault line
    var = tmp_path / "var"
    co2 = minutes(var, "tag_minute", "tag", "s2_co2")
    assert "B" in [flag for _, flag, _ in co2]  # the frozen device's tags are flagged B
    after = [flag for t, flag, _ in co2 if t >= thawed_ms]
    assert after and set(after) == {"N"}  # and good again after SIGCONT
    s2 = minutes(var, "source_minute", "source", "S2")
    assert 0 in [v for *_, v in s2]
    after_s2 = [(flag, v) for t, flag, v in s2 if t >= thawed_ms]
    assert after_s2 and set(after_s2) == {("N", 1)}
    # The other device's minutes stayed valid (the first may predate the first poll).
    s1 = minutes(var, "source_minute", "source", "S1")
    assert len(s1) >= 6
    assert [(flag, v) for _, flag, v in s1[1:]] == [("N", 1)] * (len(s1) - 1)
