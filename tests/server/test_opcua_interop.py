"""Interop with an OPC UA client not written with asyncua: node-opcua (installed by
`make test` into tests/interop) against the real server over TCP, as a DCS would connect:
Basic256Sha256 SignAndEncrypt as an operator, its certificate refused until trusted with
`carbonscada opcua trust`, anonymous refused, values read and subscribed, history read
from the historian, an alarm event received and acknowledged with a comment."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from alarms.engine import AlarmSink
from model.flags import DataFlag
from model.records import (
    MinuteResult,
    Sample,
    SampleBlock,
    SiteMinute,
    SourceMinute,
    TagMinute,
    TagTable,
)
from server.config import parse_config
from server.historian import Historian
from server.opcua.sink import OpcUaSink
from server.users import UserStore
from tests.alarms.test_rules import record
from tests.conftest import free_port
from tests.fixtures.plant import plant_dict

INTEROP = Path(__file__).resolve().parents[1] / "interop"
CARBONSCADA = str(Path(sys.executable).parent / "carbonscada")
NODE = shutil.which("node")
OPERATOR = ("olga", "olga-pass-1")

pytestmark = pytest.mark.skipif(
    NODE is None or not (INTEROP / "node_modules" / "node-opcua-client").is_dir(),
    reason="node-opcua not installed: run `make node-deps` (make test does)")


def block(*samples: Sample) -> SampleBlock:
    """The readings as the block the runtime hands sinks."""
    return SampleBlock.of_samples(TagTable(("s1_co2",)), samples)


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
        await sink.on_samples(block(Sample("s1_co2", t, 11.9)))
        co2 = "ns=2;s=Tags.cems1.s1_co2"

        async def push() -> None:
            for i in range(40):
                await asyncio.sleep(0.2)
                await sink.on_samples(block(Sample("s1_co2", datetime.now(UTC),
                                                   12.0 + i / 100)))
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


# Four Good minutes of S1 and of the raw tag s1_co2, written to the historian by the test.
T0 = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
KG = [3282.7, 3300.0, 3250.5, 3310.2]
CO2_MEANS = [12.0, 12.4, 11.8, 12.2]
RULE = {"id": "s1_rate", "name": "S1 rate", "target": {"source": "S1", "field": "co2_kg"},
        "warning": 4000.0, "alarm": 5000.0}
ACK_COMMENT = "load ramp, expected"


def history_minute(i: int) -> MinuteResult:
    t = T0 + timedelta(minutes=i)
    src = SourceMinute(source="S1", unit="U1", t=t, flow_act_m3_h=1_080_000.0,
                       flow_std_dry_m3_h=835_718.9, co2_dry_pct=12.0, co2_mg_m3=235_680.0,
                       co2_rate_kg_h=KG[i] * 60, co2_kg=KG[i], valid=True, flag=DataFlag.N)
    site = SiteMinute(t=t, co2_kg=KG[i], co2_today_t=0, co2_ytd_t=0, allowance_annual_t=0,
                      allowance_used_pct=math.nan, allowance_headroom_t=math.nan)
    tag = TagMinute("s1_co2", t, CO2_MEANS[i], CO2_MEANS[i] - 0.2, CO2_MEANS[i] + 0.3, 60,
                    DataFlag.N)
    return MinuteResult(t=t, sources=(src,), units=(), site=site, tags=(tag,))


def iso(t: datetime) -> str:
    """A UTC time as JavaScript's Date parses it."""
    return t.isoformat().replace("+00:00", "Z")


async def test_node_opcua_history_and_alarm_acknowledge(tmp_path: Path) -> None:
    port = free_port()
    d = plant_dict(opcua_port=port, var_dir=str(tmp_path / "var"))
    d["opcua"] = {"endpoint": f"opc.tcp://127.0.0.1:{port}", "pki_dir": str(tmp_path / "pki"),
                  "trust_all_clients": True}
    d["alarms"] = {"rules": [RULE]}
    cfg = parse_config(d, "test_opcua_interop")
    users = UserStore(tmp_path / "users.sqlite")
    users.add(OPERATOR[0], "operator", OPERATOR[1])
    historian = Historian(tmp_path / "h.sqlite")
    await historian.start()
    for i in range(len(KG)):
        await historian.on_minute(history_minute(i))
    alarms = AlarmSink(cfg)
    sink = OpcUaSink(cfg, alarms=alarms, users=users, history=historian)
    alarms.subscribe(sink.on_alarm)
    await sink.start()
    args = {"endpoint": f"opc.tcp://127.0.0.1:{port}", "policy": "Basic256Sha256",
            "mode": "SignAndEncrypt", "pkiDir": str(tmp_path / "node-pki"),
            "user": OPERATOR[0], "password": OPERATOR[1],
            "historyRaw": {"nodes": ["ns=2;s=U1.S1.CO2Minute", "ns=2;s=Tags.cems1.s1_co2"],
                           "start": iso(T0), "end": iso(T0 + timedelta(minutes=10))},
            "historyAverage": {"nodeId": "ns=2;s=U1.S1.CO2Minute", "start": iso(T0),
                               "end": iso(T0 + timedelta(minutes=4)), "intervalMs": 120_000},
            "alarm": {"ackComment": ACK_COMMENT,
                      "readAfterAck": ["ns=2;s=Alarms.s1_rate.Message",
                                       "ns=2;s=Alarms.s1_rate.Comment"]}}
    proc = await asyncio.create_subprocess_exec(
        str(NODE), str(INTEROP / "client.mjs"), json.dumps(args), cwd=INTEROP,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        lines: list[str] = []
        while True:  # until the client watches events (or gives up)
            line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
            if not line:
                break
            lines.append(line)
            if line.startswith('{"ready"'):
                # S1 emits 5200 kg in a minute, over the 5000 kg alarm level.
                await alarms.on_minute(record(T0, s1_kg=5200.0))
                break
        rest, err = await asyncio.wait_for(proc.communicate(), 60)
        lines += rest.decode().splitlines()
        results = [ln for ln in lines if ln.startswith("{")]
        assert results, f"node-opcua printed nothing: {err.decode()[-2000:]}"
        seen: dict[str, Any] = json.loads(results[-1])
        assert proc.returncode == 0, (seen, err.decode()[-2000:])
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await sink.stop()
        await historian.stop()

    minutes = [iso(T0 + timedelta(minutes=i)).replace("Z", ".000Z") for i in range(4)]
    co2_minute, co2_tag = seen["historyRaw"]
    assert co2_minute["status"] == "Good" and co2_tag["status"] == "Good"
    assert [(v["value"], v["status"], v["t"]) for v in co2_minute["values"]] == [
        (kg, "Good", t) for kg, t in zip(KG, minutes, strict=True)]
    # A raw tag's history: its minute means.
    assert [v["value"] for v in co2_tag["values"]] == CO2_MEANS
    average = seen["historyAverage"]
    assert average["status"] == "Good"
    assert [v["t"] for v in average["values"]] == [minutes[0], minutes[2]]
    # (3282.7 + 3300.0) / 2 and (3250.5 + 3310.2) / 2
    assert [v["value"] for v in average["values"]] == pytest.approx([3291.35, 3280.35])

    message = "S1 co2_kg = 5200 ≥ alarm level 5000 [rule s1_rate: S1 rate]"
    raised, acked = seen["alarmEvents"]
    assert (raised["ConditionName"], raised["Message"], raised["Severity"]) == (
        "s1_rate", message, 800)
    assert raised["ConditionId"] == "ns=2;s=Alarms.s1_rate"
    assert seen["ackStatus"] == "Good"
    # Acknowledged: the condition keeps what is wrong as Message, the comment in Comment.
    assert (acked["Message"], acked["Comment"], acked["ClientUserId"]) == (
        message, ACK_COMMENT, "opcua:olga")
    assert (acked["ActiveState.Id"], acked["AckedState.Id"], acked["Retain"]) == (
        True, True, True)
    assert [(r["status"], r["value"]) for r in seen["afterAck"]] == [
        ("Good", message), ("Good", ACK_COMMENT)]
    assert [(e.state, e.ack_state) for e in alarms.alarm_list()] == [
        ("alarm", "active-acknowledged")]
