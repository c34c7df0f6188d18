"""Configuration schema of the OPC UA server (kept apart from asyncua's import cost)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from model.schema import ConfigModel

_ENDPOINT = re.compile(r"opc\.tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):([0-9]{1,5})/?")

SecurityPolicyName = Literal["Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"]
SecurityModeName = Literal["Sign", "SignAndEncrypt"]


def _all_policies() -> list[SecurityPolicyName]:
    return ["Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"]


def _both_modes() -> list[SecurityModeName]:
    return ["Sign", "SignAndEncrypt"]


class OpcUaConfig(ConfigModel):
    """The OPC UA server: its endpoint, security policies and who may connect.

    Every listed policy is offered in every listed mode, with the server's certificate
    (made on first run under `pki_dir`). A client's certificate must be in
    `pki_dir`/trusted; an unknown one is filed in `pki_dir`/rejected and refused, unless
    `trust_all_clients` (demo plants only). The None endpoint (no signing, no encryption)
    and anonymous read-only sessions exist only where the file turns them on; user names
    and passwords are taken only on a SignAndEncrypt channel unless
    `passwords_on_unencrypted` says otherwise.
    """

    enabled: bool = True
    endpoint: str = "opc.tcp://0.0.0.0:4840"
    security_policies: list[SecurityPolicyName] = Field(default_factory=_all_policies)
    security_modes: list[SecurityModeName] = Field(default_factory=_both_modes)
    allow_none: bool = False
    anonymous: bool = False
    passwords_on_unencrypted: bool = False
    trust_all_clients: bool = False
    pki_dir: str = "var/pki"

    @field_validator("endpoint")
    @classmethod
    def _opc_tcp(cls, v: str) -> str:
        # asyncua would only fail at start, with its own traceback.
        m = _ENDPOINT.fullmatch(v)
        if m is None or not 1 <= int(m.group(2)) <= 65535:
            raise ValueError(f"{v!r} is not an OPC UA endpoint: write "
                             "opc.tcp://HOST:PORT with a port from 1 to 65535")
        return v

    def model_post_init(self, _ctx: object) -> None:
        """Some endpoint must exist."""
        if not self.allow_none and not (self.security_policies and self.security_modes):
            raise ValueError("no endpoint left: give 'security_policies' and "
                             "'security_modes', or 'allow_none: true'")

    def endpoint_host(self) -> str:
        """The host part of the endpoint (a bracketed IPv6 address without brackets)."""
        m = _ENDPOINT.fullmatch(self.endpoint)
        return m.group(1).strip("[]") if m else ""
