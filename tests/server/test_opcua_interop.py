"""Interop with an OPC UA client not written with asyncua: node-opcua (installed by
`make test` into tests/interop) against the real server over TCP, as a DCS would connect:
Basic256Sha256 SignAndEncrypt as an operator, its certificate refused until trusted with
`carbonscada opcua trust`, anonymous refused, values read and subscribed."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from model.records import Sample
from server.config import parse_config
from server.opcua.sink import OpcUaSink
from server.users import UserStore
from tests.conftest import free_port
from tests.fixtures.plant import plant_dict

INTEROP = Path(__file__).resolve().parents[1] / "interop"
CARBONSCADA = str(Path(sys.executable).parent / "carbonscada")
NODE = shutil.which("node")
OPERATOR = ("olga", "olga-pass-1")

pytestmark = pytest.mark.skipif(
    NODE is None or not (INTEROP / "node_modules" / "node-opcua-client").is_dir(),
    reason="node-opcua not installed: run `make node-deps` (make test does)")


async def node_client(**args: Any) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        str(NODE), str(INTEROP / "client.mjs"), json.dumps(args), cwd=INTEROP,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    lines = [ln for ln in out.decode().splitlines() if ln.startswith("{")]
    assert lines, f"node-opcua printed nothing: {err.decode()[-2000:]}"
    result: dict[str, Any] = json.loads(lines[-1])
    result["exit"] = proc.returncode
    return result


async def test_node_opcua_operator_over_basic256sha256_sign_and_encrypt(tmp_path: Path) -> None:
    port = free_port()
    d = plant_dict(opcua_port=port, var_dir=str(tmp_path / "var"))
    d["opcua"] = {"endpoint": f"opc.tcp://127.0.0.1:{port}", "pki_dir": str(tmp_path / "pki")}
    plant_file = tmp_path / "plant.yaml"
    plant_file.write_text(yaml.safe_dump(d), encoding="utf-8")
    users = UserStore(tmp_path / "users.sqlite")
    users.add(OPERATOR[0], "operator", OPERATOR[1])
    sink = OpcUaSink(parse_config(d, str(plant_file)), users=users)
    await sink.start()
    common = {"endpoint": f"opc.tcp://127.0.0.1:{port}", "policy": "Basic256Sha256",
              "mode": "SignAndEncrypt", "pkiDir": str(tmp_path / "node-pki")}
    try:
        first = await node_client(**common, user=OPERATOR[0], password=OPERATOR[1])
        assert first["exit"] == 1 and "objects" not in first, first  # not trusted yet
        rejected = sorted((tmp_path / "pki" / "rejected").glob("*.der"))
        assert len(rejected) == 1
        listed = subprocess.run([CARBONSCADA, "opcua", "trust", "-c", str(plant_file)],
                                capture_output=True, text=True, timeout=60, check=True).stdout
        assert listed.startswith("rejected") and "carbonscada-interop" in listed
        subprocess.run([CARBONSCADA, "opcua", "trust", "-c", str(plant_file), str(rejected[0])],
                       capture_output=True, text=True, timeout=60, check=True)

        anonymous = await node_client(**common)
        assert anonymous["exit"] == 1 and "objects" not in anonymous, anonymous

        t = datetime.now(UTC)
        await sink.on_samples([Sample("s1_co2", t, 11.9)])
        co2 = "ns=2;s=Tags.cems1.s1_co2"

        async def push() -> None:
            for i in range(40):
                await asyncio.sleep(0.2)
                await sink.on_samples([Sample("s1_co2", datetime.now(UTC), 12.0 + i / 100)])
        pusher = asyncio.create_task(push())
        seen = await node_client(**common, user=OPERATOR[0], password=OPERATOR[1], read=[co2],
                                 subscribe=co2, notifications=3)
        pusher.cancel()
        assert seen["exit"] == 0, seen
        assert "CarbonSCADA" in seen["objects"]
        (read,) = seen["read"]  # the value written last (the pusher may have begun)
        assert read["status"] == "Good" and 11.9 <= read["value"] <= 12.4, read
        values = [n["value"] for n in seen["notifications"]]
        assert len(values) >= 3 and all(11.9 <= v <= 12.4 for v in values), values
    finally:
        await sink.stop()
