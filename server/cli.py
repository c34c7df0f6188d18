"""The `carbonscada` command: run, check-config, recalc, export-samples, probe, user,
audit, opcua, backup, restore, storage."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from model.errors import CarbonScadaError
from model.times import parse_time
from server.config import Plant, PlantConfig, load_config, load_plant
from server.logs import setup_logging

_STARTED = time.monotonic()
DEMO_CONFIG = Path(__file__).resolve().parent.parent / "config" / "demo-plant.yaml"
log = logging.getLogger("carbonscada")


def _setup_logging(verbose: bool) -> None:
    # server/logs.py: libraries' records on one line, their tracebacks only with -v
    setup_logging(verbose)


async def _serve(plant: Plant) -> None:
    from server.runtime import Runtime

    config = plant.config
    runtime = Runtime(plant, started_at=_STARTED)
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
    plant = load_plant(path)
    log.info("configuration %s loaded", path)
    asyncio.run(_serve(plant))
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from server.runtime import preflight

    config = load_config(args.file)
    preflight(config)  # what `run` checks before it starts anything, beyond the schema
    n_tags = sum(len(d.tags) for d in config.devices)
    print(f"{args.file}: OK — site {config.site.id}, {len(config.devices)} devices, "
          f"{n_tags} tags, {len(config.units)} units, {len(config.sources())} sources, "
          f"{len(config.alarms.rules)} alarm rules")
    return 0


def _cmd_recalc(args: argparse.Namespace) -> int:
    from server.recalc import (
        recalculate,
        result_paths,
        write_minute_results,
        write_period_results,
    )

    plant = load_plant(args.config)
    plan = plant.plan()
    if args.entries:  # the ledger's entries, as `carbonscada entries` exported them
        from server.ledger import read_entries_csv
        from server.records import qa_limits, records_of

        records = records_of(read_entries_csv(Path(args.entries)), qa_limits(plant.config))
        plan = plant.plan(records)
    batches = recalculate(plan, Path(args.samples))
    if args.level == "minute":
        with _open_out(args.out) as out:
            rows = write_minute_results(out, plant.config, batches)
        log.info("%d result rows written to %s", rows, args.out)
        return 0
    # Hours and longer: the source rows in --out, the stream, unit and allowance rows in
    # files of their own beside it (RESULTS-streams.csv …): each a plain table a spreadsheet
    # opens with its own columns. All are put in place together, only when all are complete.
    extra = {} if args.out == "-" else {k: str(p) for k, p in result_paths(Path(args.out)).items()}
    if args.out == "-":
        log.warning("--out -: only the source rows are written (stream, unit and allowance "
                    "rows need a file name)")
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(_open_out(args.out))
        files = {k: stack.enter_context(_open_out(p)) for k, p in extra.items()}
        rows = write_period_results(out, plan, batches, args.level, **files)
    log.info("%d source rows written to %s%s", rows, args.out,
             "".join(f", {k} to {p}" for k, p in extra.items()))
    return 0


def _cmd_export_samples(args: argparse.Namespace) -> int:
    from server.historian import Historian
    from server.recalc import write_samples

    config = load_config(args.config)
    start, end = _utc(args.start, "--from"), _utc(args.end, "--to")

    async def windows() -> list[Any]:
        if not Path(config.historian.path).exists():
            raise CarbonScadaError(f"{config.historian.path}: no historian file here")
        h = Historian(config.historian.path)
        await h.start()
        try:
            return await h.raw_windows(start, end)
        finally:
            await h.stop()
    with _open_out(args.out) as out:
        n = write_samples(out, asyncio.run(windows()))
    log.info("%d samples written to %s", n, args.out)
    return 0


def _cmd_entries(args: argparse.Namespace) -> int:
    from server.ledger import Ledger, write_entries_csv

    config = load_config(args.config)
    if not Path(config.historian.path).exists():
        raise CarbonScadaError(f"{config.historian.path}: no historian file here")
    entries = Ledger(config.historian.path).entries()
    with _open_out(args.out) as out:
        n = write_entries_csv(out, entries)
    log.info("%d entries written to %s", n, args.out)
    return 0


def _utc(text: str, option: str) -> datetime:
    # The project's one time rule (model/times.py); its TimeRangeError is a
    # CarbonScadaError, so main() answers exit 2 naming the option and the range.
    return parse_time(text, option)


@contextlib.contextmanager
def _open_out(path: str) -> Iterator[TextIO]:
    """The output file, written beside it and put in place only when complete."""
    if path == "-":
        yield sys.stdout
        return
    part = f"{path}.part"
    try:
        f = open(part, "w", newline="", encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise CarbonScadaError(f"{path}: cannot write: {exc.strerror}") from None
    try:
        with f:
            yield f
        os.replace(part, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(part)


def _cmd_report(args: argparse.Namespace) -> int:
    from server.reports.local import make_from_files

    plant = load_plant(args.config)
    start, end = _utc(args.start, "--from"), _utc(args.end, "--to")
    if end <= start:
        raise CarbonScadaError(f"--to {args.end} must be after --from {args.start}")
    rep = asyncio.run(make_from_files(plant, args.config, args.kind, start, end, args.format))
    if args.out == "-":
        sys.stdout.buffer.write(rep.body)
        sys.stdout.flush()
    else:  # beside it first, put in place only when complete (as _open_out does)
        part = f"{args.out}.part"
        try:
            Path(part).write_bytes(rep.body)
            os.replace(part, args.out)
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                os.remove(part)
            raise CarbonScadaError(f"{args.out}: cannot write: {exc.strerror}") from None
    log.info("%s report (%d bytes) written to %s", args.kind, len(rep.body), args.out)
    return 0


def _cmd_probe(args: argparse.Namespace) -> int:
    from drivers import probe
    from model.errors import DriverError

    link = probe.parse_target(args.target, baudrate=args.baud, parity=args.parity,
                              bytesize=args.bytesize, stopbits=args.stopbits)
    if args.protocol == "dlt645":
        work = probe.probe_dlt645(link, address=args.address, di=args.di,
                                  version=args.version, timeout_s=args.timeout)
    elif args.protocol == "cjt188":
        work = probe.probe_cjt188(link, meter_type=args.type, address=args.address,
                                  di=args.di, di_order=args.di_order, timeout_s=args.timeout)
    else:
        work = probe.probe_modbus(link, rtu=args.rtu, unit=args.unit, register=args.register,
                                  count=args.count, type_=args.type, order=args.order,
                                  function=args.function, timeout_s=args.timeout)
    try:
        lines = asyncio.run(work)
    except DriverError as exc:
        print(f"carbonscada probe: {args.target}: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


def _hex_byte(text: str) -> int:
    try:
        value = int(text, 16)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a hex byte, e.g. 10") from None
    if not 0 <= value <= 0xFF:
        raise argparse.ArgumentTypeError(f"{text!r} is not a byte (00..FF)")
    return value


def _add_probe(sub: Any) -> None:
    pr = sub.add_parser("probe", help="read a field device once and print the decoded values")
    kinds = pr.add_subparsers(dest="protocol", required=True)
    parsers = []
    for name, what, baud in (("dlt645", "a DL/T 645 electricity meter", 2400),
                             ("cjt188", "a CJ/T 188 water, heat or gas meter", 2400),
                             ("modbus", "a Modbus TCP / RTU device", 9600)):
        p = kinds.add_parser(name, help=f"read {what}")
        p.add_argument("target", help="serial port (e.g. /dev/ttyUSB0) or HOST:PORT of a "
                                      "TCP gateway / Modbus TCP device")
        p.add_argument("--baud", type=int, default=baud, help=f"serial baud rate ({baud})")
        p.add_argument("--parity", choices=["N", "E", "O"], default="E",
                       help="serial parity (E)")
        p.add_argument("--bytesize", type=int, choices=[7, 8], default=8)
        p.add_argument("--stopbits", type=int, choices=[1, 2], default=1)
        p.add_argument("--timeout", type=float, default=2.0, help="reply timeout, s (2)")
        p.set_defaults(func=_cmd_probe)
        parsers.append(p)
    d645, c188, mb = parsers
    d645.add_argument("--address", default="AAAAAAAAAAAA",
                      help="12 digits as printed on the meter; AA pairs match any")
    d645.add_argument("--di", required=True, help="DI3..DI0 hex, e.g. 00010000 (4 for 1997)")
    d645.add_argument("--version", choices=["2007", "1997"], default="2007")
    c188.add_argument("--type", type=_hex_byte, required=True,
                      help="meter type, hex: 10 cold water, 20 heat, 30 gas …")
    c188.add_argument("--address", default="AAAAAAAAAAAAAA",
                      help="14 hex digits as printed (A6..A0); AAAAAAAAAAAAAA for any")
    c188.add_argument("--di", default="901F", help="data identifier (901F)")
    c188.add_argument("--di-order", choices=["low_first", "high_first"], default="low_first",
                      help="byte order of the DI in the request (the reply may use either)")
    mb.add_argument("--unit", type=int, default=1, help="unit id / slave address (1)")
    mb.add_argument("--register", type=int, required=True, help="first register (0-based)")
    mb.add_argument("--count", type=int, default=1, help="registers (or bits) to read")
    mb.add_argument("--type", default="uint16",
                    choices=["int16", "uint16", "int32", "uint32", "float32", "float64"])
    mb.add_argument("--order", default="ABCD", choices=["ABCD", "CDAB", "BADC", "DCBA"])
    mb.add_argument("--function", default="holding",
                    choices=["holding", "input", "coil", "discrete"])
    mb.add_argument("--rtu", action="store_true",
                    help="RTU framing through a TCP gateway (serial targets always use RTU)")


def _historian_file(args: argparse.Namespace) -> tuple[Path, PlantConfig]:
    """The historian file of the plant in -c (where the users and the audit log live),
    relative to the working directory as for `run`."""
    config = load_config(args.config)
    return Path(config.historian.path), config


def _cli_user() -> str:
    """Who made a change from the command line, as the audit log names them."""
    import getpass

    try:
        name = getpass.getuser()
    except (OSError, KeyError):  # no login name in the environment nor in passwd
        name = f"uid{os.getuid()}"
    return f"cli:{name}"


def _read_password(name: str) -> str:
    """$CARBONSCADA_PASSWORD, else asked twice on a terminal, else one line of stdin."""
    import getpass

    from model.errors import UserError

    given = os.environ.get("CARBONSCADA_PASSWORD")
    if given is not None:
        return given
    if sys.stdin.isatty():
        try:
            first = getpass.getpass(f"new password of {name}: ")
            second = getpass.getpass(f"the new password of {name} again: ")
        except EOFError:
            raise UserError(f"user {name!r}: no password given") from None
        if first != second:
            raise UserError(f"user {name!r}: the two passwords differ")
        return first
    line = sys.stdin.readline()
    if not line:
        raise UserError(f"user {name!r}: no password on standard input "
                        "(or set CARBONSCADA_PASSWORD)")
    return line.removesuffix("\n").removesuffix("\r")


def _local(t: datetime, zone: str, timespec: str = "seconds") -> str:
    """A UTC time as plant local time with the zone named."""
    from zoneinfo import ZoneInfo

    return f"{t.astimezone(ZoneInfo(zone)).isoformat(timespec=timespec)} {zone}"


def _user_change(args: argparse.Namespace, path: Path, config: PlantConfig) -> str:
    """Carry out one `user` subcommand; returns what to print."""
    from model.errors import AuditError, UserError
    from server.audit import AuditLog
    from server.users import UserStore

    cmd, name = args.user_command, getattr(args, "name", "")
    if cmd != "add" and not path.is_file():
        raise UserError(f"{path}: no historian file here, so no users yet")
    store = UserStore(path)
    if cmd == "list":
        zone = config.site.timezone
        return "\n".join(f"{u.name:<20} {u.role:<9} created {_local(u.created, zone)}, "
                         f"changed {_local(u.changed, zone)}" for u in store.list())
    audit = AuditLog(path)
    old = store.get(name)
    if cmd == "add":
        if old is not None:
            raise UserError(f"user {name!r}: already exists")
        user = store.add(name, args.role, _read_password(name))
        action, detail = "user_add", {"role": user.role}
        done = f"{path}: user {user.name} added with role {user.role}"
    else:
        if old is None:
            raise UserError(f"user {name!r}: no such user in {path}")
        name = old.name  # as stored: names compare without regard to case
        if cmd == "remove":
            store.remove(name)
            action, detail = "user_remove", {"role": old.role}
            done = f"{path}: user {name} removed"
        elif cmd == "passwd":
            store.set_password(name, _read_password(name))
            action, detail = "user_password", {}
            done = f"{path}: password of user {name} changed"
        else:
            store.set_role(name, args.role)
            action, detail = "user_role", {"from": old.role, "to": args.role}
            done = f"{path}: role of user {name} changed from {old.role} to {args.role}"
    try:
        audit.append(_cli_user(), action, f"user:{name}", detail)
    except AuditError as exc:
        raise AuditError(f"{done}, but the audit log was not written: {exc}") from None
    return done


def _cmd_user(args: argparse.Namespace) -> int:
    from model.errors import AuditError, UserError

    path, config = _historian_file(args)
    try:
        text = _user_change(args, path, config)
    except (UserError, AuditError) as exc:
        print(f"carbonscada user: {exc}", file=sys.stderr)
        return 1
    if text:
        print(text)
    return 0


def _cmd_audit_verify(args: argparse.Namespace) -> int:
    from model.errors import AuditError
    from server.audit import verify

    path, _ = _historian_file(args)
    try:
        verdict = verify(path)
    except AuditError as exc:
        print(f"carbonscada audit: {exc}", file=sys.stderr)
        return 1
    if not verdict.ok:
        print(f"audit log {path}: BROKEN at {verdict.problem}")
        return 1
    print(f"audit log {path}: OK, {verdict.entries} entries, "
          f"last hash {verdict.last_hash[:16]}")
    return 0


def _cmd_audit_list(args: argparse.Namespace) -> int:
    from model.errors import AuditError
    from server.audit import AuditLog, canonical_json

    path, config = _historian_file(args)
    start = None if args.start is None else _utc(args.start, "--from")
    end = None if args.end is None else _utc(args.end, "--to")
    try:
        if not path.is_file():
            raise AuditError(f"audit log {path}: no such file")
        entries = AuditLog(path).entries(start, end, limit=2**62)
    except AuditError as exc:
        print(f"carbonscada audit: {exc}", file=sys.stderr)
        return 1
    zone = config.site.timezone
    for e in entries:
        print(f"{e.seq:>6}  {_local(e.t, zone, 'milliseconds')}  {e.user}  {e.action}  "
              f"{e.target}  {canonical_json(e.detail)}")
    return 0


def _add_user_audit(sub: Any) -> None:
    from model.accounts import ROLES

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", required=True,
                        help="plant configuration (users and audit log live in its historian)")
    us = sub.add_parser("user", help="manage the web login accounts",
                        description="Passwords come from $CARBONSCADA_PASSWORD if set, else "
                                    "are asked twice on a terminal, else read as one line of "
                                    "standard input. Every change goes to the audit log.")
    acts = us.add_subparsers(dest="user_command", required=True)
    add = acts.add_parser("add", parents=[common], help="create an account")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=ROLES)
    acts.add_parser("list", parents=[common], help="list the accounts")
    rm = acts.add_parser("remove", parents=[common], help="delete an account")
    rm.add_argument("name")
    pw = acts.add_parser("passwd", parents=[common], help="set an account's password")
    pw.add_argument("name")
    ro = acts.add_parser("role", parents=[common], help="change an account's role")
    ro.add_argument("name")
    ro.add_argument("role", choices=ROLES)
    us.set_defaults(func=_cmd_user)
    au = sub.add_parser("audit", help="check or list the audit log")
    checks = au.add_subparsers(dest="audit_command", required=True)
    ver = checks.add_parser("verify", parents=[common],
                            help="recompute the audit log's hash chain")
    ver.set_defaults(func=_cmd_audit_verify)
    ls = checks.add_parser("list", parents=[common], help="print audit log entries")
    ls.add_argument("--from", dest="start", help="ISO 8601 with offset")
    ls.add_argument("--to", dest="end", help="ISO 8601 with offset (exclusive)")
    ls.set_defaults(func=_cmd_audit_list)


def _cmd_backup(args: argparse.Namespace) -> int:
    from server.audit import AuditLog
    from server.backup import BackupError, make_backup

    path, config = _historian_file(args)
    if args.to is None and config.backup is None:
        raise BackupError(f"{args.config}: no backup.dir configured: give --to DIR")
    if not path.is_file():
        raise BackupError(f"historian {path}: no such file")
    cfg = config.backup
    dest = Path(args.to if args.to is not None else cfg.dir if cfg is not None else ".")
    # The configured directory keeps its generations; a --to elsewhere keeps everything.
    keep = (cfg.keep if cfg is not None and dest.resolve() == Path(cfg.dir).resolve()
            else None)
    result = make_backup(path, dest, AuditLog(path), _cli_user(), keep=keep,
                         pages_per_step=cfg.pages_per_step if cfg else 1024,
                         step_sleep_s=cfg.step_sleep_s if cfg else 0.005)
    print(f"{result.path}: verified backup of {path} as of {result.t.isoformat()} "
          f"({result.bytes} bytes, {sum(result.counts.values())} rows in "
          f"{len(result.counts)} tables, integrity ok, {result.duration_s:.2f} s)")
    return 0


def _cmd_restore(args: argparse.Namespace) -> int:
    from server.backup import restore

    path, _ = _historian_file(args)
    kept = restore(path, Path(args.file), _cli_user())
    print(f"{path}: restored from {args.file} (integrity ok, audit chain ok)"
          + (f"; the replaced file is kept as {kept}" if kept is not None else ""))
    return 0


def _cmd_storage(args: argparse.Namespace) -> int:
    from server.retention import storage_report

    path, config = _historian_file(args)
    print(storage_report(path, config.retention))
    return 0


def _add_backup(sub: Any) -> None:
    bk = sub.add_parser("backup", help="make a verified online backup of the historian "
                                       "(safe while the server runs)")
    bk.add_argument("-c", "--config", required=True, help="plant configuration")
    bk.add_argument("--to", metavar="DIR", help="directory (default: backup.dir)")
    bk.set_defaults(func=_cmd_backup)
    rs = sub.add_parser("restore", help="replace the historian by a verified backup "
                                        "(the server must be stopped)")
    rs.add_argument("-c", "--config", required=True, help="plant configuration")
    rs.add_argument("file", help="a backup file made by `carbonscada backup`")
    rs.set_defaults(func=_cmd_restore)
    st = sub.add_parser("storage", help="sizes of the historian's tables and the projected "
                                        "size at 5 years")
    st.add_argument("-c", "--config", required=True, help="plant configuration")
    st.set_defaults(func=_cmd_storage)


def _cmd_opcua_trust(args: argparse.Namespace) -> int:
    from server.opcua.pki import Pki, common_name, read_certificate

    pki = Pki(Path(load_config(args.config).opcua.pki_dir))
    if args.reject is not None:
        print(f"moved to {pki.reject(args.reject)}")
    elif args.file is not None:
        print(f"trusted: {pki.trust(read_certificate(Path(args.file)))}")
    else:
        for what, listed in (("trusted", pki.trusted_list()), ("rejected", pki.rejected_list())):
            for tp, path in listed.items():
                print(f"{what:9} {tp}  {common_name(read_certificate(path))}  {path}")
    return 0


def _add_opcua(sub: Any) -> None:
    op = sub.add_parser("opcua", help="the OPC UA server's trust list of client certificates")
    acts = op.add_subparsers(dest="opcua_command", required=True)
    tr = acts.add_parser("trust", help="trust a client certificate, list or reject them",
                         description="Without FILE, --list or --reject: the list. An unknown "
                                     "client's certificate is filed in PKI/rejected when it "
                                     "tries to connect; trusting it moves it to PKI/trusted.")
    tr.add_argument("-c", "--config", required=True, help="plant configuration (opcua.pki_dir)")
    what = tr.add_mutually_exclusive_group()
    what.add_argument("file", nargs="?", help="a client certificate (DER or PEM) to trust")
    what.add_argument("--list", action="store_true", help="list trusted and rejected ones")
    what.add_argument("--reject", metavar="THUMBPRINT",
                      help="move a trusted certificate back to rejected/")
    tr.set_defaults(func=_cmd_opcua_trust)


def _cmd_hj212_platform(args: argparse.Namespace) -> int:
    from server.hj212.simulator import serve

    asyncio.run(serve(args.host, args.port, tz=args.tz, withhold_acks=args.withhold_acks,
                      ack_delay_s=args.ack_delay))
    return 0


def _add_hj212_platform(sub: Any) -> None:
    hp = sub.add_parser("hj212-platform", help="run an HJ 212-2017 platform simulator (for the "
                        "demo and tests) and print every packet a data logger sends it")
    hp.add_argument("--host", default="127.0.0.1", help="address to listen on")
    hp.add_argument("--port", type=int, required=True, help="TCP port (0: a free one)")
    hp.add_argument("--tz", default="Asia/Shanghai", help="plant time zone of HJ 212 times")
    hp.add_argument("--withhold-acks", action="store_true", help="never answer 9014")
    hp.add_argument("--ack-delay", type=float, default=0.0, metavar="S",
                    help="seconds before each 9014")
    hp.set_defaults(func=_cmd_hj212_platform)


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
    rc = sub.add_parser("recalc", help="recalculate results from a CSV of raw samples")
    rc.add_argument("-c", "--config", required=True, help="plant configuration")
    rc.add_argument("--samples", required=True,
                    help="CSV with header timestamp,tag,value[,flag]")
    rc.add_argument("--out", required=True, help="results CSV ('-' for standard output); "
                    "hours and longer also write OUT-streams.csv, OUT-units.csv and "
                    "OUT-allowance.csv beside it")
    rc.add_argument("--level", choices=["minute", "hour", "day", "month", "year"],
                    default="minute", help="period of the result rows (default minute)")
    rc.add_argument("--entries", help="entries CSV (carbonscada entries): lab factors, "
                    "quantities, corrections and QA checks applied as the server applied them")
    rc.set_defaults(func=_cmd_recalc)
    en = sub.add_parser("entries", help="write the ledger of entries (lab data, corrections, "
                        "QA checks, locks) as CSV, for recalc --entries")
    en.add_argument("-c", "--config", required=True, help="plant configuration")
    en.add_argument("--out", required=True, help="entries CSV ('-' for standard output)")
    en.set_defaults(func=_cmd_entries)
    ex = sub.add_parser("export-samples",
                        help="write the raw samples the server calculated from, as CSV")
    ex.add_argument("-c", "--config", required=True, help="plant configuration")
    ex.add_argument("--from", dest="start", required=True, help="ISO 8601 with offset")
    ex.add_argument("--to", dest="end", required=True, help="ISO 8601 with offset (exclusive)")
    ex.add_argument("--out", required=True, help="samples CSV ('-' for standard output)")
    ex.set_defaults(func=_cmd_export_samples)
    rp = sub.add_parser("report", help="write an emission report (daily, monthly, annual, "
                        "platform or a custom one) from the historian")
    rp.add_argument("kind", help="daily, monthly, annual, platform (the carbon-market "
                    "monthly workbook) or the name of a definition in reports.definitions")
    rp.add_argument("-c", "--config", required=True, help="plant configuration")
    rp.add_argument("--from", dest="start", required=True, help="ISO 8601 with offset")
    rp.add_argument("--to", dest="end", required=True, help="ISO 8601 with offset (exclusive)")
    rp.add_argument("--format", choices=["xlsx", "csv", "pdf"], default="xlsx")
    rp.add_argument("--out", required=True, help="report file ('-' for standard output)")
    rp.set_defaults(func=_cmd_report)
    _add_probe(sub)
    _add_user_audit(sub)
    _add_opcua(sub)
    _add_backup(sub)
    _add_hj212_platform(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `carbonscada` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        status: int = args.func(args)
    except CarbonScadaError as exc:
        text = str(exc)
        # One problem on the line of "error:" (grep finds it whole); a list of them below.
        sep = "\n" if "\n" in text else " "
        print(f"carbonscada: error:{sep}{text}", file=sys.stderr)
        return 2
    except OSError as exc:
        # e.g. a port already in use: say which, without a traceback
        print(f"carbonscada: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: say so in one line; the traceback only on request
        log.debug("internal error", exc_info=True)
        print(f"carbonscada: internal error: {type(exc).__name__}: {exc}"
              f"{'' if args.verbose else ' (run with -v for details)'}", file=sys.stderr)
        return 70
    return status


if __name__ == "__main__":
    sys.exit(main())
