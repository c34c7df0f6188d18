"""The log format: a library's record on one line unless -v; the project's as logged."""

from __future__ import annotations

import logging
import sys

from server.logs import OneLineFormatter


def record(name: str, msg: str, exc: BaseException | None = None) -> logging.LogRecord:
    """A record of logger `name` at ERROR, with `exc` as its exc_info if given."""
    exc_info = None
    if exc is not None:
        try:
            raise exc
        except BaseException:
            exc_info = sys.exc_info()
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, None, exc_info)


def test_a_librarys_traceback_becomes_one_line() -> None:
    r = record("asyncua.server.server", "error starting server",
               OSError(98, "address\n  already in use"))
    text = OneLineFormatter().format(r)
    assert "\n" not in text
    assert text.endswith(" ERROR asyncua.server.server: error starting server: OSError: "
                         "[Errno 98] address already in use (details with -v)")
    assert r.exc_info is not None  # other handlers still get the whole record


def test_a_librarys_frame_dump_is_cut_to_its_first_line() -> None:
    r = record("pymodbus.logging", "No response received\n>>>>> send: 0x1 0x2\n>>>>> recv:")
    assert OneLineFormatter().format(r).endswith(
        "pymodbus.logging: No response received (details with -v)")


def test_verbose_and_the_projects_own_records_keep_their_tracebacks() -> None:
    for name, verbose in (("asyncua", True), ("drivers", False), ("carbonscada", False)):
        text = OneLineFormatter(verbose).format(record(name, "failed", ValueError("bad")))
        assert "Traceback (most recent call last)" in text
        assert text.rstrip().endswith("ValueError: bad")


def test_times_are_utc_with_milliseconds() -> None:
    r = record("carbonscada", "hello")
    r.created, r.msecs = 0.25, 250.0
    assert OneLineFormatter().format(r) == ("1970-01-01T00:00:00.250Z ERROR carbonscada: "
                                            "hello")
