"""OPC UA login throttling never refuses a user's right password to another address
(issue 11): real asyncua clients over TCP from 127.0.0.1 and 127.0.0.2 (both loopback on
Linux), against the real sink, user store and audit log."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from asyncua.client.client import Client
from asyncua.client.ua_client import UaClient, UaClientState
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaStatusCodeError

from server.audit import AuditLog
from server.opcua.sink import OpcUaSink
from server.opcua.users import _UserManager
from server.users import UserStore
from tests.fixtures.plant import plant_config

pytestmark = pytest.mark.reliability

ADMIN = ("ada", "ada-password-1")


class Clock:
    """A monotonic clock standing still unless a test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def bind_source(client: Client, address: str) -> None:
    """Make `client` open its TCP connection from `address` (asyncua 2.1 has no option for
    it: its UaClient.connect_socket, with local_addr passed to create_connection)."""
    ua_client: UaClient = client.uaclient

    async def connect_socket(host: str, port: int) -> None:
        ua_client._set_state(UaClientState.CONNECTING)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().create_connection(
                ua_client._make_protocol, host, port, local_addr=(address, 0)),
                ua_client._timeout)
        except BaseException:
            ua_client._set_state(UaClientState.DISCONNECTED)
            raise
        ua_client._set_state(UaClientState.SOCKET_OPEN)

    ua_client.connect_socket = connect_socket  # type: ignore[method-assign]


async def connect(port: int, source: str, name: str, password: str) -> int | str:
    """The peer address the server saw if the login got in (then disconnects), else the
    status code that refused it."""
    client = Client(f"opc.tcp://127.0.0.1:{port}", timeout=10)
    bind_source(client, source)
    client.set_user(name)
    client.set_password(password)
    try:
        await client.connect()
    except UaStatusCodeError as exc:
        return int(exc.code)
    try:
        protocol = client.uaclient.protocol
        assert protocol is not None and protocol.transport is not None
        local: str = protocol.transport.get_extra_info("sockname")[0]
    finally:
        await client.disconnect()
    return local


async def test_right_password_from_another_address_is_never_refused(
        port: int, tmp_path: Path) -> None:
    users = UserStore(tmp_path / "h.sqlite")
    users.add(ADMIN[0], "admin", ADMIN[1])
    audit = AuditLog(tmp_path / "h.sqlite")
    sink = OpcUaSink(plant_config(opcua_port=port), users=users, audit=audit)
    await sink.start()
    try:
        assert sink.server is not None
        manager = sink.server.iserver.user_manager
        assert isinstance(manager, _UserManager)
        manager.throttle.clock = Clock()  # standing still: no delay ends by itself
        denied = StatusCodes.BadUserAccessDenied
        # An attacker at 127.0.0.1 guesses ada's password 25 times: after 5 failures the
        # address-and-name rule delays it 60 s, so the other 20 are refused unchecked.
        results = [await connect(port, "127.0.0.1", ADMIN[0], f"guess{i}") for i in range(25)]
        assert results == [denied] * 25
        assert manager.throttle.failed_total == 5  # the other 20 refused unchecked
        # Even the right password is refused from there ...
        assert await connect(port, "127.0.0.1", *ADMIN) == denied
        # ... but ada from 127.0.0.2 gets in, and it was really that address.
        assert await connect(port, "127.0.0.2", *ADMIN) == "127.0.0.2"
        # A wrong password from 127.0.0.2 is just one failure there, the right one gets in.
        assert await connect(port, "127.0.0.2", ADMIN[0], "typo") == denied
        assert await connect(port, "127.0.0.2", *ADMIN) == "127.0.0.2"
    finally:
        await sink.stop()
    rows = [(e.user, e.target, e.detail) for e in audit.entries()
            if e.action == "login_failed"]
    by_target = {target: detail for _, target, detail in rows}
    assert sorted(by_target) == ["remote:127.0.0.1", "remote:127.0.0.2"]
    assert {k: by_target["remote:127.0.0.1"][k] for k in ("count", "failed", "refused")} == {
        "count": 26, "failed": 5, "refused": 21}
    assert {k: by_target["remote:127.0.0.2"][k] for k in ("count", "failed", "refused")} == {
        "count": 1, "failed": 1, "refused": 0}
