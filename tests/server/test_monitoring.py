"""Self-monitoring (issue 11): /metrics scraped from a real runtime with a Modbus TCP
simulator, /ready before and after the first minute, and the loop-lag probe's
measurement of a stall made on purpose."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from server.config import parse_plant
from server.looplag import LoopLagProbe
from server.runtime import Runtime
from tests.conftest import free_port
from tests.fixtures.plant import plant_dict
from tests.fixtures.smtp import SmtpServer

pytestmark = pytest.mark.reliability

STALL_S = 0.3
# Modbus TCP frames of the fixture device's two blocks (holding 0–9 and 20–21): a read
# request is MBAP 7 + function 1 + start 2 + count 2 = 12 bytes; a reply is
# MBAP 7 + function 1 + byte count 1 + 2 per register.
REQUEST_BYTES = 12
REPLY_BYTES = (7 + 1 + 1 + 2 * 10, 7 + 1 + 1 + 2 * 2)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text exposition: (name, sorted labels) → value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def replies_bytes(n: int) -> int:
    """Bytes of the first `n` replies: the blocks are read in turn, every poll."""
    return sum(REPLY_BYTES[i % 2] for i in range(n))


def block_loop() -> None:
    time.sleep(STALL_S)  # on purpose: what a blocking call in a callback does to the loop


async def test_the_probe_measures_a_stall_made_on_purpose() -> None:
    probe = LoopLagProbe(interval_s=0.02)
    probe.start()
    try:
        await asyncio.sleep(0.1)
        before = probe.count
        asyncio.get_running_loop().call_soon(block_loop)
        await asyncio.sleep(0.1)  # the probe wakes late once, then on time again
    finally:
        await probe.stop()
    assert probe.count > before
    # At most one probe interval shorter than the stall (see server/looplag.py).
    assert probe.max_stall_s >= STALL_S - 0.05
    assert sum(probe.bucket_counts) == probe.count
    assert not probe.running


def test_the_largest_stall_stays_one_whole_window() -> None:
    now = [0.0]
    probe = LoopLagProbe(window_s=60.0, clock=lambda: now[0])
    probe.observe(0.4)
    now[0] = 59.0
    probe.observe(0.01)
    assert probe.max_stall_s == 0.4
    now[0] = 61.0  # the next window: the last full window's stall is still shown
    probe.observe(0.02)
    assert probe.max_stall_s == 0.4
    now[0] = 121.0  # two windows on: only the last full window's (0.02) counts
    assert probe.max_stall_s == 0.02
    now[0] = 300.0
    assert probe.max_stall_s == 0.0


async def test_metrics_health_and_ready_of_a_running_server(tmp_path: Path,
                                                            smtp_server: SmtpServer) -> None:
    web_port = free_port()
    # Two-second minutes: the first minute is published at least 0.4 s (the grace after
    # the boundary) after start() returns, so /ready is seen refusing first.
    d = plant_dict(free_port(), web_port=web_port, var_dir=str(tmp_path / "var"),
                   minute_seconds=2.0)
    d["opcua"]["enabled"] = False
    d["web"]["demo_users"] = True
    d["devices"][0]["poll_interval_s"] = 0.05
    # The worked example's ≈ 197 t/h is over the alarm limit at the first minute: one
    # notification to a mail server that takes it, one to a port nothing listens on.
    mail = {"kind": "email", "sender": "carbonscada@plant.example", "timeout_s": 2.0,
            "to": ["ops@plant.example"]}
    d["alarms"] = {
        "rules": [{"id": "S1_rate", "target": {"source": "S1", "field": "co2_rate_t_h"},
                   "warning": 100.0, "alarm": 150.0, "notify": ["ops", "dead"]}],
        "channels": [{"id": "ops", "host": smtp_server.host, "port": smtp_server.port, **mail},
                     {"id": "dead", "host": "127.0.0.1", "port": free_port(), **mail}],
        "delivery": {"retries": 0},
    }
    # An InfluxDB that is down: what is written waits in the outbox.
    d["influx"] = {"url": f"http://127.0.0.1:{free_port()}", "flush_interval_s": 0.2,
                   "outbox_path": str(tmp_path / "var" / "influx-outbox.sqlite")}
    runtime = Runtime(parse_plant(d, "test"))
    base = f"http://127.0.0.1:{web_port}"
    await runtime.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/ready") as r:
                assert r.status == 503, await r.text()
                assert "first minute" in await r.text()
            async with http.get(f"{base}/health") as r:
                assert r.status == 200
            for _ in range(100):  # bounded: the first minute is due within 2.4 s
                async with http.get(f"{base}/ready") as r:
                    if r.status == 200:
                        break
                    assert r.status == 503
                await asyncio.sleep(0.05)
            assert r.status == 200
            assert runtime.monitor.minutes_published >= 1

            async def scrape() -> Samples:
                async with http.get(f"{base}/metrics") as r:
                    assert r.status == 200
                    assert r.headers["Content-Type"].startswith("text/plain")
                    return parse(await r.text())

            for attempt in range(6):  # wrong passwords; the sixth is throttled
                async with http.post(f"{base}/api/v1/login",
                                     json={"user": "viewer", "password": "wrong"}) as r:
                    assert r.status == (429 if attempt == 5 else 401)
            await smtp_server.wait_for(1)
            for _ in range(50):  # bounded: the refused connection fails within milliseconds
                first = await scrape()
                if ("carbonscada_notifications_total",
                        (("channel", "dead"), ("outcome", "failed"))) in first:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            asyncio.get_running_loop().call_soon(block_loop)
            await asyncio.sleep(0.1)
            second = await scrape()
    finally:
        await runtime.stop()

    dev = {"device": "cems1", "bus": "127.0.0.1:" + str(d["devices"][0]["port"])}
    bus = {"bus": dev["bus"]}
    assert value(second, "carbonscada_device_polls_total", **dev) > value(
        first, "carbonscada_device_polls_total", **dev) > 0
    assert value(second, "carbonscada_device_errors_total", **dev) == 0
    assert value(second, "carbonscada_device_online", **dev) == 1
    assert 0 < value(second, "carbonscada_device_latency_seconds", **dev) < 1
    for s in (first, second):
        requests = int(value(s, "carbonscada_bus_requests_total", **bus))
        out = value(s, "carbonscada_bus_bytes_out_total", **bus)
        got = value(s, "carbonscada_bus_bytes_in_total", **bus)
        assert requests > 10
        # Exactly the frames' bytes; the last request may be in flight at the scrape.
        assert out in (REQUEST_BYTES * requests, REQUEST_BYTES * (requests - 1))
        # The first connection asks whether the server takes pipelined requests: the first
        # block twice at once (drivers/modbus_tcp.py); pymodbus's simulator answers one,
        # and the link reconnects to read one block at a time, in turn, every poll.
        polled = requests - 2
        assert got in (REPLY_BYTES[0] + replies_bytes(polled),
                       REPLY_BYTES[0] + replies_bytes(polled - 1)), (requests, got)

    assert value(second, "carbonscada_sink_queue_depth", sink="historian") >= 0
    assert value(second, "carbonscada_sink_dropped_sample_batches_total", sink="web") == 0
    assert value(second, "carbonscada_minutes_published_total") >= 1
    assert value(second, "carbonscada_sink_outbox_batches", sink="influx") >= 1
    assert value(second, "carbonscada_sink_outbox_oldest_age_seconds", sink="influx") >= 0
    assert value(second, "carbonscada_notifications_total", channel="ops", outcome="sent") == 1
    assert value(second, "carbonscada_notifications_total", channel="dead",
                 outcome="failed") == 1
    assert value(second, "carbonscada_minute_cycle_duration_seconds_count") >= 1
    assert value(second, "carbonscada_logins_refused_total", sink="web",
                 reason="wrong_password") == 5
    assert value(second, "carbonscada_logins_refused_total", sink="web",
                 reason="throttled") == 1
    assert value(first, "carbonscada_event_loop_lag_seconds_count") > 0
    # The stall made on purpose, as the probe saw it (at most one interval short) …
    assert value(second, "carbonscada_event_loop_lag_max_seconds") >= STALL_S - 0.05

    def over_quarter_s(s: Samples) -> float:
        return value(s, "carbonscada_event_loop_lag_seconds_count") - value(
            s, "carbonscada_event_loop_lag_seconds_bucket", le="0.25")
    # … and between the two scrapes: not some stall of the start-up.
    assert over_quarter_s(second) > over_quarter_s(first)
    assert value(second, "carbonscada_event_loop_lag_seconds_bucket", le="+Inf") == value(
        second, "carbonscada_event_loop_lag_seconds_count")


async def test_stream_link_counts_every_byte_that_arrives(port: int) -> None:
    # A DL/T 645 meter behind a TCP gateway answers 32 bytes of noise instead of a frame:
    # they crossed the bus, so they count, though no frame took them.
    from tests.drivers.test_meters import meter645, running

    link = {"host": "127.0.0.1", "port": port}
    meter = meter645(link, "000000000161", [{"id": "ua", "di": "02010100",
                                             "sim": {"value": 100.1}}], "m1")
    async with running([meter]) as (run, sim):
        await run.until(lambda: len(run.of("ua")) >= 2)
        sim.set_fault("m1", "garbage")
        await run.until(lambda: run.drivers[0].stats()[0].errors >= 2)
        sim.set_fault("m1", "none")
        bus = run.drivers[0].bus_stats()
        [device] = run.drivers[0].stats()
    good = device.requests - device.errors - 1  # the last may still be in flight
    assert bus.requests == device.requests and bus.bytes_out % bus.requests == 0
    # each good reply is one frame (≥ 16 bytes); each garbled one 32 bytes of noise
    assert bus.bytes_in >= 16 * good + 32 * device.errors, (bus, device)
