"""`check-config` refuses every configuration that `run` would refuse at start, with the
same one line naming the file, the key path and the problem, and `run` refuses it before
it creates or writes anything (no demo accounts, no audit entries, no historian)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.plant import plant_dict

CARBONSCADA = str(Path(sys.executable).parent / "carbonscada")

Change = Callable[[dict[str, Any]], None]


def _rule(**rule: Any) -> Change:
    def change(d: dict[str, Any]) -> None:
        d["alarms"] = {"rules": [{"id": "r1", **rule}]}
    return change


def _email_route(d: dict[str, Any]) -> None:
    d["alarms"] = {"channels": [{"id": "mail", "kind": "email", "host": "127.0.0.1",
                                 "sender": "cems@plant.example", "to": ["ops@plant.example"]}],
                   "routes": [{"channels": ["mail", "pager"]}]}


def _secret_env(d: dict[str, Any]) -> None:
    d["alarms"] = {"channels": [{
        "id": "mail", "kind": "email", "host": "127.0.0.1", "sender": "cems@plant.example",
        "to": ["ops@plant.example"], "username": "cems",
        "password_env": "CARBONSCADA_TEST_UNSET_SECRET"}]}


def _endpoint(d: dict[str, Any]) -> None:
    d["opcua"] = {"endpoint": "http://127.0.0.1:notaport"}


def _tls(d: dict[str, Any]) -> None:
    d["web"] = {"tls_cert": "/nonexistent/cert.pem", "tls_key": "/nonexistent/key.pem"}


CASES: list[tuple[str, Change, str]] = [
    # the defect of the restructure issue: passed check-config, then run exited 70
    ("unknown alarm field", _rule(target={"source": "S1", "field": "co2_rat_t_h"}, alarm=1.0),
     "alarms.rules[0].target.field: alarm rule 'r1': unknown source field 'co2_rat_t_h'"),
    ("stale rule on a tag's value", _rule(kind="stale", target={"tag": "s1_co2",
                                                                "field": "value"},
                                          warning_min=5),
     "alarms.rules[0].target.field: alarm rule 'r1': unknown tag field 'value'"),
    ("rule on an unknown source", _rule(target={"source": "S9", "field": "co2_kg"}, alarm=1.0),
     "alarms.rules[0].target.source: unknown source 'S9'"),
    ("unknown channel in a route", _email_route,
     "alarms: routes[0].channels[1]: unknown channel 'pager'"),
    ("secret from an unset variable", _secret_env,
     "alarms.channels[0].password_env: "),
    ("OPC UA endpoint", _endpoint, "opcua.endpoint: 'http://127.0.0.1:notaport' is not an "
     "OPC UA endpoint"),
    ("TLS files", _tls, "/nonexistent/cert.pem: web.tls_cert"),
]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd)}  # CARBONSCADA_TEST_UNSET_SECRET unset
    return subprocess.run([CARBONSCADA, *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env=env, check=False)


@pytest.mark.parametrize(("change", "line"), [(c, line) for _, c, line in CASES],
                         ids=[name for name, _, _ in CASES])
def test_check_config_refuses_what_run_refuses(tmp_path: Path, change: Change,
                                               line: str) -> None:
    d = plant_dict(var_dir=str(tmp_path / "var"))
    change(d)
    f = tmp_path / "plant.yaml"
    f.write_text(yaml.safe_dump(d, allow_unicode=True), encoding="utf-8")
    checked = _cli("check-config", str(f), cwd=tmp_path)
    ran = _cli("run", "-c", str(f), cwd=tmp_path)
    for r in (checked, ran):
        assert r.returncode == 2, r.stdout + r.stderr
        assert line in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    assert not (tmp_path / "var").exists()  # run created nothing: no accounts, no audit
