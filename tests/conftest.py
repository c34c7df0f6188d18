"""Shared fixtures; the fixtures that start real servers live in tests/fixtures/."""

from __future__ import annotations

import socket

import pytest

pytest_plugins = [
    "tests.fixtures.victoria",
    "tests.fixtures.smtp",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def port() -> int:
    """A free loopback TCP port."""
    return free_port()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `long` first: under `-n 2 --dist loadfile` one worker starts on such a
    file while the other takes the rest, instead of the suite ending on it alone (a plant
    day of the steel demo added 190 s to the parallel part when it was collected late)."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)
