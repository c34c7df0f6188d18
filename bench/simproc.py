"""bench/fast_modbus_sim.py in a child process: the launcher the Modbus benchmarks share."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

SIM = Path(__file__).with_name("fast_modbus_sim.py")


def process_cpu_s(pid: int) -> float:
    """CPU seconds process `pid` used so far (user + system, from /proc); NaN off Linux."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class SimProcess:
    """The fast Modbus TCP simulator serving `spec` ({"endpoints": n, "tables": [...]})."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.proc = subprocess.Popen([sys.executable, str(SIM)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(spec) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"simulator exited with {self.proc.wait()}")
        self.ports: list[int] = json.loads(line)["ports"]
        self.served: dict[str, int] = {}

    def cpu_s(self) -> float:
        """CPU seconds the simulator used so far (user + system); NaN off Linux."""
        return process_cpu_s(self.proc.pid)

    def stop(self) -> None:
        """Close its stdin (it stops and reports what it served), kill it if it does not."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        out = self.proc.stdout.read()
        self.proc.stdout.close()
        self.served = json.loads(out.splitlines()[-1]) if out.strip() else {}
