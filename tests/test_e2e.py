"""End to end: the real `carbonscada run` process on a test plant with 2-second minutes.

Simulators serve the worked-example inputs of ../shared/reference/calc_vectors.md as
constants, so every minute's CO2 mass is known by hand: v 15 m/s, A 20 m², t 50 °C,
Ba 101325 Pa, Ps -500 Pa, Xsw 0.08, CO2 12.0 % dry → G 196 962.2 kg/h, 3 282.70 kg.
The test reads it over OPC UA (asyncua client over TCP), from VictoriaMetrics, from
the historian file, and receives the alarm email on a real SMTP server.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncua import Client

from tests.conftest import free_port
from tests.fixtures.plant import plant_dict
from tests.fixtures.smtp import SmtpServer
from tests.fixtures.victoria import VictoriaMetrics

pytestmark = pytest.mark.e2e

MINUTE_KG = 3282.70  # calc_vectors.md, printed to 0.01 kg
RATE_T_H = 196.9622  # G = 196 962.2 kg/h
MINUTE_S = 2.0
CARBONSCADA = str(Path(sys.executable).parent / "carbonscada")


def printed(value: float, decimals: int) -> Any:
    """Equal to a figure printed with `decimals` places."""
    return pytest.approx(value, abs=0.5 * 10.0**-decimals, rel=0)


@dataclass
class Plant:
    """A running carbonscada process and where to reach it."""

    proc: asyncio.subprocess.Process
    config: dict[str, Any]
    var: Path
    lines: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    @property
    def opcua_url(self) -> str:
        return str(self.config["opcua"]["endpoint"])

    async def wait_for_line(self, pattern: str, timeout: float) -> re.Match[str]:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if m := rx.search(line):
                    return m
            if self.proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r}; output:\n" + "".join(self.lines))

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
                raise AssertionError("carbonscada did not stop within 15 s of SIGTERM") from None
        if self.reader is not None:
            await self.reader
        return self.proc.returncode  # type: ignore[return-value]


async def start_plant(config: dict[str, Any], tmp: Path) -> Plant:
    cfg_path = tmp / "plant.yaml"
    cfg_path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    proc = await asyncio.create_subprocess_exec(
        CARBONSCADA, "run", "-c", str(cfg_path), cwd=tmp,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    plant = Plant(proc, config, tmp)

    async def read() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            plant.lines.append(raw.decode(errors="replace"))
    plant.reader = asyncio.create_task(read())
    return plant


def e2e_config(tmp: Path, vm: VictoriaMetrics, smtp: SmtpServer) -> dict[str, Any]:
    cfg = plant_dict(free_port(), opcua_port=free_port(), web_port=free_port(),
                     var_dir=str(tmp / "var"), minute_seconds=MINUTE_S)
    cfg["site"]["timezone"] = "UTC"  # plant days are then whole multiples of 2880 s
    cfg["influx"] = {"url": vm.url, "flush_interval_s": 0.5,
                     "outbox_path": str(tmp / "var" / "outbox.sqlite")}
    cfg["alarms"] = {
        "rules": [{"id": "S1_rate", "target": {"source": "S1", "field": "co2_rate_t_h"},
                   "warning": 100.0, "alarm": 150.0, "notify": ["ops"]}],
        "channels": [{"id": "ops", "kind": "email", "host": smtp.host, "port": smtp.port,
                      "sender": "carbonscada@plant.example", "to": ["ops@plant.example"]}],
    }
    return cfg




@pytest.fixture
async def plant(tmp_path: Path, victoria_metrics: VictoriaMetrics,
                smtp_server: SmtpServer) -> AsyncIterator[Plant]:
    p = await start_plant(e2e_config(tmp_path, victoria_metrics, smtp_server), tmp_path)
    try:
        yield p
    finally:
        await p.stop()


def historian_rows(var: Path, source: str) -> list[tuple[int, float, str, int]]:
    with sqlite3.connect(f"file:{var / 'historian.sqlite'}?mode=ro", uri=True) as db:
        return db.execute("SELECT t_ms, co2_kg, flag, valid FROM source_minute"
                          " WHERE source = ? ORDER BY t_ms", (source,)).fetchall()


async def test_minute_mass_everywhere(plant: Plant, victoria_metrics: VictoriaMetrics,
                                      smtp_server: SmtpServer) -> None:
    m = await plant.wait_for_line(r"first minute \S+ published ([\d.]+) s after process start",
                                  timeout=60)
    ready = await plant.wait_for_line(r"ready ([\d.]+) s after process start", timeout=1)
    print(f"\nready {float(ready.group(1)):.2f} s, first published minute "
          f"{float(m.group(1)):.2f} s after process start")
    # Let two more complete minutes pass so that every sink has full minutes.
    await asyncio.sleep(2 * MINUTE_S + 0.5)

    async with Client(plant.opcua_url, timeout=10) as client:
        ns = await client.get_namespace_index("urn:carbonscada:testsite")
        co2_minute = client.get_node(f"ns={ns};s=U1.S1.CO2Minute")
        dv = await co2_minute.read_data_value()
        assert dv.Value.Value == printed(MINUTE_KG, 2)
        assert dv.StatusCode.is_good()
        assert dv.SourceTimestamp.timestamp() % MINUTE_S == pytest.approx(0, abs=1e-3)
        rate = await client.get_node(f"ns={ns};s=U1.S1.CO2Rate").read_value()
        assert rate == printed(RATE_T_H, 4)

    rows = historian_rows(plant.var / "var", "S1")
    # Every calculated minute was polled all through: the one the server started in is
    # not calculated (it would read flag B although no device failed, issue 11).
    complete = rows
    assert len(complete) >= 2
    for t_ms, co2_kg, flag, valid in complete:
        assert t_ms % int(MINUTE_S * 1000) == 0
        assert (co2_kg, flag, valid) == (printed(MINUTE_KG, 2), "N", 1)

    deadline = time.monotonic() + 10
    while True:
        series = victoria_metrics.export('co2_source_co2_kg{source="S1"}')
        stored = {} if not series else dict(zip(series[0]["timestamps"], series[0]["values"],
                                                strict=True))
        if all(t_ms in stored for t_ms, *_ in complete) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    for t_ms, *_ in complete:
        assert stored[t_ms] == printed(MINUTE_KG, 2), f"minute {t_ms} in VictoriaMetrics"

    # 196.96 t/h is above the alarm level 150: exactly one alarm email, not one a minute.
    (mail,) = await smtp_server.wait_for(1, timeout=10)
    assert "ALARM" in mail["Subject"] and "S1" in mail["Subject"]
    assert mail["To"] == "ops@plant.example"
    assert "196.96" in mail.get_content()

    assert await plant.stop() == 0
    out = "".join(plant.lines)
    assert "Traceback" not in out
    assert "stopped" in out
    for port in (plant.config["opcua"]["endpoint"].rsplit(":", 1)[1],
                 plant.config["web"]["port"], plant.config["devices"][0]["port"]):
        # Every port was released: a restarted server can listen there again (connections
        # the server closed may linger in TIME_WAIT, which SO_REUSEADDR is for).
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", int(port)))
            s.listen()


async def test_totals_continue_after_restart(tmp_path: Path, victoria_metrics: VictoriaMetrics,
                                             smtp_server: SmtpServer) -> None:
    cfg = e2e_config(tmp_path, victoria_metrics, smtp_server)
    first = await start_plant(cfg, tmp_path)
    await first.wait_for_line(r"first minute", timeout=60)
    await asyncio.sleep(2 * MINUTE_S)
    assert await first.stop(signal.SIGINT) == 0  # Ctrl-C under `make run`
    assert "Traceback" not in "".join(first.lines)
    before = historian_rows(tmp_path / "var", "S1")
    assert before

    second = await start_plant(cfg, tmp_path)
    try:
        await second.wait_for_line(r"first minute", timeout=60)
        await asyncio.sleep(MINUTE_S + 0.5)
        async with Client(second.opcua_url, timeout=10) as client:
            ns = await client.get_namespace_index("urn:carbonscada:testsite")
            node = client.get_node(f"ns={ns};s=U1.S1.CO2Today")
            for _ in range(100):  # bounded: under load the minute may reach OPC UA later
                dv = await node.read_data_value(raise_on_bad_status=False)
                if dv.Value is not None and dv.Value.Value is not None:
                    break
                await asyncio.sleep(0.1)
        t_ms = round(dv.SourceTimestamp.timestamp() * 1000)
    finally:
        assert await second.stop() == 0
    rows = historian_rows(tmp_path / "var", "S1")
    # A plant day in this config is 24 × 60 two-second minutes from the epoch (UTC).
    day_ms = 24 * 60 * int(MINUTE_S * 1000)
    day = t_ms // day_ms
    same_day = [kg for t, kg, *_ in rows if t // day_ms == day and t <= t_ms]
    assert dv.Value.Value == pytest.approx(math.fsum(same_day) / 1000, rel=1e-9)
    if before[0][0] // day_ms == day:  # no day boundary in between (it is 48 min long)
        assert dv.Value.Value > math.fsum(kg for _, kg, *_ in before) / 1000
