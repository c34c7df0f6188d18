"""The `carbonscada` command: run, check-config."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from pathlib import Path

from server.config import PlantConfig, load_config
from server.errors import CarbonScadaError

_STARTED = time.monotonic()
DEMO_CONFIG = Path(__file__).resolve().parent.parent / "config" / "demo-plant.yaml"
log = logging.getLogger("carbonscada")


class _UtcFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """ISO 8601 UTC with milliseconds."""
        t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{t}.{int(record.msecs):03d}Z"


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_UtcFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    for noisy in ("asyncua", "pymodbus", "aiohttp.access", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def _serve(config: PlantConfig) -> None:
    from server.runtime import Runtime

    runtime = Runtime(config, started_at=_STARTED)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await runtime.start()
    parts = []
    if config.opcua.enabled:
        parts.append(f"OPC UA {config.opcua.endpoint}")
    if config.web.enabled:
        parts.append(f"HMI http://{config.web.host}:{config.web.port}/")
    log.info("carbonscada running site %s (%s), ready %.2f s after process start; %s",
             config.site.id, config.site.name, time.monotonic() - _STARTED, ", ".join(parts))
    try:
        await stop.wait()
        log.info("stopping")
    finally:
        await runtime.stop()
    log.info("stopped")


def _cmd_run(args: argparse.Namespace) -> int:
    path = Path(args.config) if args.config else DEMO_CONFIG
    config = load_config(path)
    log.info("configuration %s loaded", path)
    asyncio.run(_serve(config))
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    n_tags = sum(len(d.tags) for d in config.devices)
    print(f"{args.file}: OK — site {config.site.id}, {len(config.devices)} devices, "
          f"{n_tags} tags, {len(config.units)} units, {len(config.sources())} sources, "
          f"{len(config.alarms.rules)} alarm rules")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `carbonscada` command."""
    p = argparse.ArgumentParser(prog="carbonscada",
                                description="Real-time carbon-emission monitoring server")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the server (the demo plant without -c)")
    run.add_argument("-c", "--config", help=f"plant configuration (default {DEMO_CONFIG})")
    run.set_defaults(func=_cmd_run)
    chk = sub.add_parser("check-config", help="validate a configuration file and exit")
    chk.add_argument("file")
    chk.set_defaults(func=_cmd_check)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `carbonscada` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        status: int = args.func(args)
    except CarbonScadaError as exc:
        print(f"carbonscada: error:\n{exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # e.g. a port already in use: say which, without a traceback
        print(f"carbonscada: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
