"""The server's log format: UTC times, and every library's record as one line.

An operator reads the log to learn what failed and where; a library's traceback or
its dump of raw frames says neither and buries what does. So, unless the server runs
with -v (debug), a record from a third-party logger (asyncua, aiohttp, pymodbus,
asyncio …) is printed as one line: its first line and, for an exception, its type and
message. The project's own records keep their tracebacks: those are defects, logged on
purpose with log.exception. pymodbus is silent without -v: the drivers log every
device fault once themselves (drivers/bus.py), while pymodbus logs one line per failed
request and appends its last 20 raw frames to each error.
"""

from __future__ import annotations

import logging
import sys
import time

# Top-level packages of this project (see README's layout); every other logger is a library's.
PROJECT_LOGGERS = ("carbonscada", "model", "drivers", "compute", "alarms", "web", "server")
# Libraries whose records only repeat what the project logs better: shown with -v only.
VERBOSE_ONLY_LOGGERS = ("pymodbus",)
# Libraries whose warnings are noise to an operator (per request, or at start-up).
WARNING_LOGGERS = ("asyncua", "aiohttp.access", "numba")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def is_project_logger(name: str) -> bool:
    """Whether a logger belongs to carbonscada itself (not to a library)."""
    return name.split(".", 1)[0] in PROJECT_LOGGERS


def one_line(exc: BaseException) -> str:
    """An exception as `Type: message` on one line (whitespace runs folded)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class OneLineFormatter(logging.Formatter):
    """ISO 8601 UTC times; a library's record on one line unless `verbose`."""

    def __init__(self, verbose: bool = False, fmt: str = LOG_FORMAT) -> None:
        super().__init__(fmt)
        self.verbose = verbose

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """ISO 8601 UTC with milliseconds."""
        t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{t}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        """The record; a library's cut to one line, its exception as `Type: message`."""
        if self.verbose or is_project_logger(record.name):
            return super().format(record)
        first, newline, _ = record.getMessage().partition("\n")
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            first = f"{first}: {one_line(exc)}"
        if newline or exc is not None or record.stack_info:
            first += " (details with -v)"
        # A copy: other handlers (pytest's caplog) still get the record as it was.
        short = logging.makeLogRecord(record.__dict__)
        short.msg, short.args = first, None
        short.exc_info = short.exc_text = short.stack_info = None
        return super().format(short)


def setup_logging(verbose: bool) -> None:
    """Log to stderr: INFO (DEBUG with `verbose`), libraries quieter, one line each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter(verbose))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    for name in WARNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in VERBOSE_ONLY_LOGGERS:
        # Above CRITICAL: pymodbus then neither formats its messages nor dumps frames (it
        # keeps only the last 20 in a bounded list). With -v its warnings and errors, each
        # with those last frames, but not two lines per request of every device.
        logging.getLogger(name).setLevel(logging.WARNING if verbose else logging.CRITICAL + 1)
