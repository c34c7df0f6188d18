"""`carbonscada probe` against simulated devices over a pty and over TCP."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from drivers.base import create_simulators
from drivers.config import DeviceConfig

CLI = str(Path(sys.executable).parent / "carbonscada")
_adapter: TypeAdapter[DeviceConfig] = TypeAdapter(DeviceConfig)


@contextlib.asynccontextmanager
async def simulated(*devices: dict[str, Any]) -> AsyncIterator[None]:
    sims = create_simulators([_adapter.validate_python({"simulate": True, **d})
                              for d in devices], "Asia/Shanghai")
    for s in sims:
        await s.start()
    try:
        yield
    finally:
        for s in sims:
            await s.stop()


async def probe(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        CLI, "probe", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def vector_meter(link: dict[str, Any]) -> dict[str, Any]:
    """Meter 000000000161 of protocol_vectors.md: 0.26 kWh, phase-A 100.1 V."""
    return {"id": "m", "protocol": "dlt645", "link": link, "address": "000000000161",
            "tags": [{"id": "kwh", "di": "00010000", "sim": {"value": 0.26}},
                     {"id": "ua", "di": "02010100", "sim": {"value": 100.1}}]}


async def test_dlt645_over_pty(tmp_path: Path) -> None:
    tty = str(tmp_path / "ttyMeter")
    async with simulated(vector_meter({"serial": tty, "parity": "N"})):
        rc, out, err = await probe("dlt645", tty, "--parity", "N", "--address",
                                   "000000000161", "--di", "00010000")
        assert (rc, err) == (0, "")
        assert out == "meter 000000000161 DI 00010000 (DL/T 645-2007): 0.26 kWh\n"
        # AA wildcards reach the only meter on the line
        rc, out, _ = await probe("dlt645", tty, "--parity", "N", "--di", "02010100")
        assert (rc, out) == (0, "meter AAAAAAAAAAAA DI 02010100 (DL/T 645-2007): 100.1 V\n")
        # a DI the meter does not have: the abnormal reply, decoded
        rc, out, err = await probe("dlt645", tty, "--parity", "N", "--address",
                                   "000000000161", "--di", "02020100")
        assert (rc, out) == (1, "")
        assert err == (f"carbonscada probe: {tty}: abnormal reply: ERR 0x02 no requested "
                       "data\n")


async def test_dlt645_1997_over_tcp_gateway(port: int) -> None:
    link = {"host": "127.0.0.1", "port": port}
    meter = {"id": "m", "protocol": "dlt645", "version": "1997", "link": link,
             "address": "000000000003", "tags": [{"id": "ua", "di": "B611",
                                                   "sim": {"value": 100.0}}]}
    async with simulated(meter):
        rc, out, err = await probe("dlt645", f"127.0.0.1:{port}", "--version", "1997",
                                   "--address", "000000000003", "--di", "B611")
    assert (rc, err) == (0, "")
    assert out == "meter 000000000003 DI B611 (DL/T 645-1997): 100 V\n"


async def test_cjt188_over_pty(tmp_path: Path) -> None:
    tty = str(tmp_path / "ttyWater")
    meter = {"id": "w", "protocol": "cjt188", "link": {"serial": tty, "parity": "N"},
             "meter_type": 0x10, "address": "78330011223344",
             "tags": [{"id": "m3", "field": "current_volume_m3", "sim": {"value": 556677.0}}]}
    async with simulated(meter):
        rc, out, err = await probe("cjt188", tty, "--parity", "N", "--type", "10",
                                   "--address", "78330011223344", "--di", "901F")
    assert (rc, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "meter 78330011223344 type 0x10 (cold water) DI 901F (CJ/T 188-2004)"
    assert lines[1] == "  current_volume_m3: 556677 m³"
    assert lines[-1] == "  status 0x0000: valve open, battery ok"


async def test_modbus_tcp_and_rtu(tmp_path: Path, port: int) -> None:
    tty = str(tmp_path / "ttyRtu")
    tcp = {"id": "t", "protocol": "modbus_tcp", "host": "127.0.0.1", "port": port,
           "tags": [{"id": "a", "register": 100, "order": "CDAB", "sim": {"value": 123.456}}]}
    rtu = {"id": "r", "protocol": "modbus_rtu", "device_id": 3,
           "link": {"serial": tty, "parity": "N"},
           "tags": [{"id": "b", "register": 7, "type": "int16", "sim": {"value": -5}}]}
    async with simulated(tcp, rtu):
        rc, out, err = await probe("modbus", f"127.0.0.1:{port}", "--register", "100",
                                   "--count", "2", "--type", "float32", "--order", "CDAB")
        assert (rc, err) == (0, "")
        # protocol_vectors.md: 123.456 in CDAB is E979 42F6
        assert out == (f"unit 1 holding 100..101 via 127.0.0.1:{port}: registers 0xE979 "
                       "0x42F6\n  as float32 CDAB: 123.456\n")
        rc, out, err = await probe("modbus", tty, "--parity", "N", "--unit", "3",
                                   "--register", "7", "--type", "int16")
        assert (rc, err) == (0, "")
        assert out == f"unit 3 holding 7..7 via {tty}: registers 0xFFFB\n  as int16 ABCD: -5\n"
        rc, out, err = await probe("modbus", f"127.0.0.1:{port}", "--register", "500")
        assert (rc, out) == (1, "")
        assert err == (f"carbonscada probe: 127.0.0.1:{port}: exception reply reading "
                       "holding 500..500: ILLEGAL_ADDRESS (2)\n")


@pytest.mark.parametrize("args", [
    ["dlt645", "{tcp}", "--di", "00010000", "--timeout", "0.3"],
    ["cjt188", "{tcp}", "--type", "30", "--timeout", "0.3"],
])
async def test_nothing_there(args: list[str], port: int) -> None:
    rc, out, err = await probe(*(a.format(tcp=f"127.0.0.1:{port}") for a in args))
    assert (rc, out) == (1, "")
    assert err.startswith(f"carbonscada probe: 127.0.0.1:{port}: cannot open 127.0.0.1:{port}")


async def test_bad_arguments_name_the_option(tmp_path: Path) -> None:
    rc, _, err = await probe("dlt645", str(tmp_path / "tty"), "--address", "12345",
                             "--di", "00010000")
    assert rc == 2 and "--address" in err and "Traceback" not in err
    rc, _, err = await probe("dlt645", str(tmp_path / "tty"), "--di", "0001")
    assert rc == 2 and "--di" in err and "Traceback" not in err
    rc, _, err = await probe("modbus", "127.0.0.1:1502", "--register", "0", "--count", "3",
                             "--type", "float32")
    assert rc == 2 and "--count: float32 takes 2 registers a value" in err
