"""The runtime's teardown: every stop runs, newest first, and the historian is closed even
when a sink's stop fails; the failure is reported, naming the sink."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

from model.errors import ConfigError, SinkError
from model.records import MinuteResult, Sample
from server import runtime as rt
from server.config import PlantConfig, parse_plant
from tests.conftest import free_port
from tests.fixtures.plant import plant_dict


class BrokenStop:
    """A sink whose stop fails (a real sink's stop can: a socket error, a full disk)."""

    name = "broken"

    def __init__(self, order: list[str]) -> None:
        self.order = order

    async def start(self) -> None:
        """Nothing to open."""

    async def on_samples(self, samples: Sequence[Sample]) -> None:
        """Ignore samples."""

    async def on_minute(self, result: MinuteResult) -> None:
        """Ignore minutes."""

    async def stop(self) -> None:
        """Fail."""
        self.order.append("broken")
        raise OSError(28, "No space left on device")


async def test_historian_closes_although_a_sink_fails_to_stop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    entry = rt.SinkEntry("broken", lambda c: True, lambda r, c, a: BrokenStop(order))
    monkeypatch.setattr(rt, "SINKS", (*rt.SINKS, entry))
    d = plant_dict(free_port(), var_dir=str(tmp_path / "var"))
    d["opcua"]["enabled"] = False
    d["web"]["enabled"] = False
    runtime = rt.Runtime(parse_plant(d, "test"))
    stop_historian = runtime.historian.stop

    async def historian_stop() -> None:
        order.append("historian")
        await stop_historian()
    monkeypatch.setattr(runtime.historian, "stop", historian_stop)
    await runtime.start()
    with pytest.raises(SinkError, match=r"sink broken: OSError: .*No space left on device"):
        await runtime.stop()
    assert order == ["broken", "historian"]  # newest first, the historian last
    assert runtime.historian._db is None  # checkpointed and closed
    db = sqlite3.connect(tmp_path / "var" / "historian.sqlite")  # and not left locked
    try:
        db.execute("BEGIN EXCLUSIVE")
    finally:
        db.close()
    await runtime.stop()  # a second stop has nothing left to do


def test_preflight_is_what_the_runtime_checks_first(tmp_path: Path) -> None:
    d = plant_dict(var_dir=str(tmp_path / "var"))
    d["web"] = {"tls_cert": str(tmp_path / "missing.pem"), "tls_key": str(tmp_path / "k.pem")}
    cfg = PlantConfig.model_validate(d)
    with pytest.raises(ConfigError, match=r"missing\.pem: web\.tls_cert"):
        rt.preflight(cfg)
    with pytest.raises(ConfigError, match=r"missing\.pem: web\.tls_cert"):
        rt.Runtime(parse_plant(d, "test"))
    assert not (tmp_path / "var").exists()
