"""The login throttle's rules (web/throttle.py), shared by the web HMI and OPC UA, on a
clock the test moves by hand; and its password check and audit, with the real user store
and audit log on a tmp SQLite file."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from model.accounts import User
from server.audit import AuditLog
from server.users import UserStore
from web.throttle import LoginThrottle, Rule

A, B = "10.0.0.1", "10.0.0.2"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fail(t: LoginThrottle, address: str, name: str, n: int = 1) -> float | None:
    delay = None
    for _ in range(n):
        assert t.begin(address, name) is None, (address, name)
        delay = t.failed(address, name)
    return delay


def test_failures_of_one_address_never_refuse_another() -> None:
    clock = Clock()
    t = LoginThrottle(clock=clock)
    assert fail(t, A, "admin", 4) is None
    assert fail(t, A, "admin") == 60.0  # the fifth: 60 s for admin from A
    assert t.begin(A, "Admin ") == (60, "name")  # whatever the case and blanks
    assert t.begin(A, "operator") is None  # another name from A is checked
    t.cancel(A, "operator")
    # From B, admin's right password is checked, however long the guessing from A goes on.
    for _ in range(40):
        clock.now += 1000
        fail(t, A, "admin")
        assert t.begin(B, "admin") is None
        t.cancel(B, "admin")


def test_delays_double_and_are_capped() -> None:
    clock = Clock()
    t = LoginThrottle(clock=clock, window_s=10_000.0)
    waits = []
    for _ in range(7):
        while (r := t.begin(A, "admin")) is not None:
            clock.now += r[0]
        waits.append(t.failed(A, "admin"))
    assert waits == [None, None, None, None, 60.0, 120.0, 240.0]
    assert LoginThrottle().pair.delay(40, 900.0) == 900.0


def test_an_address_trying_many_names_is_delayed() -> None:
    clock = Clock()
    t = LoginThrottle(clock=clock)
    for i in range(19):
        assert fail(t, A, f"u{i}") is None
    assert fail(t, A, "u19") == 1.0
    assert t.begin(A, "viewer") == (1, "address")
    assert t.begin(B, "viewer") is None  # the other address is not
    t.cancel(B, "viewer")
    clock.now += 1
    assert fail(t, A, "u20") == 2.0  # then 2 s, 4 s …
    assert t.begin(A, "viewer") == (2, "address")


def test_a_name_guessed_from_many_addresses_delays_those_addresses_only() -> None:
    clock = Clock()
    t = LoginThrottle(clock=clock)
    for i in range(10):  # 20 failures for admin, two from each of ten addresses
        fail(t, f"10.1.0.{i}", "admin", 2)
    # A guesser that failed admin twice now waits for the name, whichever address it is.
    assert t.begin("10.1.0.3", "admin") == (1, "name")
    # One failed try (a typo) is forgiven; an address that never failed admin is not held.
    fail(t, B, "admin")
    assert t.begin(B, "admin") is None
    t.cancel(B, "admin")
    assert t.begin("10.9.9.9", "admin") is None


def test_attempts_in_flight_count() -> None:
    t = LoginThrottle(clock=Clock())
    assert all(t.begin(A, "admin") is None for _ in range(5))
    assert t.begin(A, "admin") == (1, "name")  # a sixth could exceed the limit
    assert t.begin(B, "admin") is None
    t.cancel(B, "admin")
    t.cancel(A, "admin")
    assert t.begin(A, "admin") is None


def test_the_right_password_forgets_only_its_own_failures() -> None:
    clock = Clock()
    t = LoginThrottle(clock=clock, address=Rule(6, 1.0))
    fail(t, A, "admin", 4)
    fail(t, A, "viewer")
    assert t.begin(A, "admin") is None
    t.succeeded(A, "admin")
    fail(t, A, "admin", 1)  # admin's four are forgotten: no delay yet ...
    assert t.begin(A, "admin") == (1, "address")  # ... but the address still counts six


def test_failures_expire_and_memory_stays_bounded() -> None:
    clock = Clock()
    t = LoginThrottle(clock=clock, max_keys=100)
    fail(t, A, "admin", 5)
    clock.now += 300
    assert t.begin(A, "admin") is None
    t.cancel(A, "admin")
    for i in range(500):
        fail(t, f"10.2.{i // 200}.{i % 200}", f"n{i}")
    assert len(t._state) <= 100 + 3


@pytest.fixture
def store(tmp_path: Path) -> UserStore:
    s = UserStore(tmp_path / "h.sqlite")
    s.add("admin", "admin", "right-password")
    return s


async def test_checks_run_in_a_thread_one_at_a_time(store: UserStore) -> None:
    """The event loop goes on while passwords are checked, never two at once."""
    threads: set[int] = set()
    running, most = 0, 0
    lock = threading.Lock()

    class Watched(UserStore):
        def authenticate(self, name: str, password: str) -> User | None:
            nonlocal running, most
            with lock:
                running += 1
                most = max(most, running)
            threads.add(threading.get_ident())
            try:
                return super().authenticate(name, password)
            finally:
                with lock:
                    running -= 1

    users = Watched(store.path)
    t = LoginThrottle()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    tick = asyncio.create_task(ticker())
    results = await asyncio.gather(*(t.check(users, None, f"10.3.0.{i}", "admin", pw)
                                     for i, pw in enumerate(["wrong"] * 5 + ["right-password"])))
    tick.cancel()
    assert [r.user.name if r.user else None for r in results] == [None] * 5 + ["admin"]
    assert threading.get_ident() not in threads and most == 1
    assert ticks >= 6  # the loop ran while the six checks (≥ 6 × 30 ms) went on


async def test_failed_logins_of_an_address_are_summed_up(store: UserStore,
                                                         tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "h.sqlite")
    t = LoginThrottle()
    results = [await t.check(store, audit, A, f"guess{i}", "x", extra={"via": "opcua"})
               for i in range(40)]
    refused = sum(r.retry_after_s is not None for r in results)
    assert refused > 0
    await t.check(store, audit, B, "admin", "nope")
    # One entry per address per window (issue 11), written when the window ends or at a
    # flush: nothing one by one, however many names a flood tries.
    assert len(audit.entries()) == 0
    await t.flush()
    entries = audit.entries()
    by_target = {e.target: e for e in entries}
    assert len(entries) == 2 and set(by_target) == {f"remote:{A}", f"remote:{B}"}
    single = by_target[f"remote:{B}"]
    assert (single.user, single.action) == ("admin", "login_failed")
    summary = by_target[f"remote:{A}"]
    assert (summary.user, summary.action) == ("*", "login_failed")
    d = summary.detail
    assert d is not None
    assert (d["count"], d["failed"], d["refused"], d["users_total"]) == (40, 40 - refused,
                                                                          refused, 40)
    assert d["users"] == [f"guess{i}" for i in range(10)] and d["via"] == "opcua"
