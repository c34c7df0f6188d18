"""OPC UA user-name logins (issue 11): checked before ActivateSession in a worker thread,
throttled like the web's, failures audited; against the real sink on loopback with the real
user store and audit log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from asyncua import Client
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaStatusCodeError

from server.audit import AuditLog
from server.opcua.sink import OpcUaSink
from server.opcua.users import _UserManager
from server.users import UserStore
from tests.fixtures.plant import plant_config

pytestmark = pytest.mark.reliability

OPERATOR = ("olga", "olga-password")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def connect(port: int, name: str, password: str) -> int:
    """0 if the login got in (then disconnects), else the status code that refused it."""
    client = Client(f"opc.tcp://127.0.0.1:{port}", timeout=10)
    client.set_user(name)
    client.set_password(password)
    try:
        await client.connect()
    except UaStatusCodeError as exc:
        return int(exc.code)
    await client.disconnect()
    return 0


async def test_throttled_and_audited_and_the_right_password_gets_in(port: int,
                                                                    tmp_path: Path) -> None:
    users = UserStore(tmp_path / "h.sqlite")
    users.add(OPERATOR[0], "operator", OPERATOR[1])
    audit = AuditLog(tmp_path / "h.sqlite")
    sink = OpcUaSink(plant_config(opcua_port=port), users=users, audit=audit)
    await sink.start()
    try:
        assert sink.server is not None
        manager = sink.server.iserver.user_manager
        assert isinstance(manager, _UserManager)
        clock = manager.throttle.clock = Clock()
        assert await connect(port, *OPERATOR) == 0
        for _ in range(5):
            assert await connect(port, OPERATOR[0], "guess") == StatusCodes.BadUserAccessDenied
        # Delayed 60 s from this address: even the right password is refused unchecked ...
        assert await connect(port, *OPERATOR) == StatusCodes.BadUserAccessDenied
        clock.now += 60
        assert await connect(port, *OPERATOR) == 0  # ... and gets in after it
    finally:
        await sink.stop()
    rows = [(e.user, e.action, e.target, e.detail) for e in audit.entries()]
    # One entry for the address's window (issue 11), written at stop.
    assert rows == [("olga", "login_failed", "remote:127.0.0.1", rows[0][3])]
    assert {k: rows[0][3][k] for k in (
        "count", "failed", "refused", "users", "via", "blocked_s")} == {
        "count": 6, "failed": 5, "refused": 1, "users": ["olga"], "via": "opcua",
        "blocked_s": 60.0}


def test_get_user_never_checks_a_password_itself(tmp_path: Path) -> None:
    """asyncua calls get_user synchronously: without a token verified beforehand by
    `_Processor`, a user name is refused rather than checked on the event loop."""
    users = UserStore(tmp_path / "h.sqlite")
    users.add(OPERATOR[0], "operator", OPERATOR[1])
    manager = _UserManager(users)
    iserver: Any = None  # get_user does not look at it
    assert manager.get_user(iserver, username=OPERATOR[0], password=OPERATOR[1]) is None
    anonymous = manager.get_user(iserver)
    assert anonymous is not None and anonymous.name is None
