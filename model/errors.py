"""The one exception hierarchy of carbonscada; every message is fit for an operator.

Every error the project raises on purpose derives from `CarbonScadaError`, so that the
CLI and the servers can tell ours (a clear message, exit 2 or HTTP 4xx) from a defect.
Where callers or pydantic expect a built-in kind as well, the class derives from both.
"""

from __future__ import annotations


class CarbonScadaError(Exception):
    """Base of every error carbonscada raises on purpose."""


class ConfigError(CarbonScadaError):
    """A configuration file is wrong: names the file, the key path and the problem."""

    def __init__(self, origin: str, path: str, problem: str) -> None:
        self.problems: list[tuple[str, str]] = [(path, problem)]
        self.origin = origin
        super().__init__(self._text())

    @classmethod
    def many(cls, origin: str, problems: list[tuple[str, str]]) -> ConfigError:
        """One error carrying several (key path, problem) pairs of the same file."""
        err = cls(origin, *problems[0])
        err.problems = list(problems)
        err.args = (err._text(),)
        return err

    def _text(self) -> str:
        return "\n".join(f"{self.origin}: {path}: {problem}" for path, problem in self.problems)


class DriverError(CarbonScadaError):
    """A field device could not be read; names the device and what went wrong."""


class ProtocolError(DriverError):
    """Bytes received from a device do not form a valid reply."""


class SinkError(CarbonScadaError):
    """An output (historian, InfluxDB, notifier) failed."""


class UserError(CarbonScadaError):
    """A web login account cannot be created, changed or found; names the user and why."""


class AuditError(CarbonScadaError):
    """The audit log file cannot be opened, read or written; names the file."""


class InvalidValueError(CarbonScadaError, ValueError):
    """A value handed to a codec or a calculation is outside its domain; names the value.

    Also a ValueError: pydantic validators turn it into a key-path message.
    """


class LockedPeriodError(InvalidValueError):
    """An entry would change a locked period (a reported month); names the lock."""


class NotFoundError(CarbonScadaError, LookupError):
    """Something asked for by name (a rule, a factor version, a row) does not exist."""

    def __str__(self) -> str:
        # LookupError's KeyError-like repr quoting is not for operators.
        return str(self.args[0]) if self.args else ""


class FactorVersionNotFound(NotFoundError):
    """No version of a factor stream is in force at the asked time."""


class AlarmActionError(CarbonScadaError):
    """An operator action that is incomplete or impossible in the alarm's present state."""


class UnknownRuleError(NotFoundError, KeyError):
    """An alarm action or change names a rule the engine does not have (also a KeyError)."""


def os_error_text(exc: OSError) -> str:
    """An OSError as an operator reads it: no errno, no repeated address.

    asyncio's bind failure says "error while attempting to bind on address ('h', p):
    address already in use"; the caller names the address already, so only the cause.
    """
    text = exc.strerror or str(exc)
    if text.startswith("error while attempting to bind"):
        return text.rsplit("): ", 1)[-1]
    return text
