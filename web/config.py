"""Configuration schema of the web HMI and REST API, and the plant as the web sees it."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from alarms.config import AlarmPlantConfig
from model.schema import ConfigModel
from web.register import RegisterPlantConfig


class WebConfig(ConfigModel):
    """The web HMI and REST API, its sessions and TLS."""

    enabled: bool = True
    host: str = "0.0.0.0"
    port: int = Field(8080, ge=0, le=65535)
    # Sessions end after this long without a request, and after session_max_h in any case.
    session_idle_min: float = Field(30.0, gt=0, le=24 * 60)
    session_max_h: float = Field(12.0, gt=0, le=24 * 7)
    # PEM files; with both the HMI is served over HTTPS and session cookies are Secure.
    tls_cert: str | None = None
    tls_key: str | None = None
    # Create the demo accounts (viewer, operator, engineer, admin; password "demo-<role>").
    # Only a demo plant may do this: every device simulated.
    demo_users: bool = False

    def model_post_init(self, _ctx: Any) -> None:
        """TLS needs both the certificate and its key."""
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both 'tls_cert' and 'tls_key', or neither")


class WebPlantConfig(AlarmPlantConfig, RegisterPlantConfig):
    """The plant as the web stage sees it: everything below it, and its own sections
    (`web:`, and `instruments:` of the instrument register, web/register.py)."""

    web: WebConfig = WebConfig()
