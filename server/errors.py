"""The one exception hierarchy of carbonscada; every message is fit for an operator."""

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
