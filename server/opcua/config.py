"""Configuration schema of the OPC UA server (kept apart from asyncua's import cost)."""

from __future__ import annotations

import re

from pydantic import field_validator

from model.schema import ConfigModel

_ENDPOINT = re.compile(r"opc\.tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):([0-9]{1,5})/?")


class OpcUaConfig(ConfigModel):
    """The OPC UA server."""

    enabled: bool = True
    endpoint: str = "opc.tcp://0.0.0.0:4840"

    @field_validator("endpoint")
    @classmethod
    def _opc_tcp(cls, v: str) -> str:
        # asyncua would only fail at start, with its own traceback.
        m = _ENDPOINT.fullmatch(v)
        if m is None or not 1 <= int(m.group(2)) <= 65535:
            raise ValueError(f"{v!r} is not an OPC UA endpoint: write "
                             "opc.tcp://HOST:PORT with a port from 1 to 65535")
        return v
