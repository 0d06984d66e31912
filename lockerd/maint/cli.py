"""``lockerctl``: the technician's command line for a running (or stopped) lockerd.

Exit codes: 0 done, 1 the command failed or found problems, 2 bad usage or
configuration, 3 the daemon is not running (for commands that need it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import __version__
from .. import config as config_module
from .client import CommandFailed, MaintClient, NotRunning
from .protocol import Refused

DEFAULT_CONFIG = Path("/etc/lockerd/lockerd.toml")
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3


def _parser() -> argparse.ArgumentParser:
    def options(suppress: bool) -> argparse.ArgumentParser:
        # Options go before or after the command; the subcommand's copy must not
        # overwrite a value given before it with its default, hence SUPPRESS there.
        default: Any = argparse.SUPPRESS if suppress else None
        flag: Any = argparse.SUPPRESS if suppress else False
        p = argparse.ArgumentParser(add_help=False)
        p.add_argument("--json", action="store_true", default=flag, help="machine-readable output")
        p.add_argument(
            "--config",
            type=Path,
            default=default,
            help=f"the daemon's configuration (default {DEFAULT_CONFIG} or $LOCKERD_CONFIG)",
        )
        p.add_argument(
            "--socket", type=Path, default=default, help="the maintenance socket (default: config)"
        )
        return p

    top = options(suppress=False)
    common = options(suppress=True)
    parser = argparse.ArgumentParser(
        prog="lockerctl",
        description="Talk to lockerd, the parcel-locker cabinet daemon.",
        parents=[top],
    )
    parser.add_argument("--version", action="version", version=f"lockerctl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text, parents=[common])

    add("status", "version, uptime, boards, compartments by state, outbox, sync, clock")
    doors = add("doors", "every compartment: size, state, door, lock, occupancy, fault")
    doors.add_argument("--grid", action="store_true", help="draw the cabinet's grid")
    open_ = add("open", "open one compartment's door (recorded as a technician action)")
    open_.add_argument("id")
    open_.add_argument("--reason", required=True)
    open_.add_argument(
        "--reservation",
        metavar="ID",
        help="hand this reservation's parcel over: the close completes its pickup",
    )
    service = add("service", "take a compartment out of service (off) or back (on)")
    service.add_argument("id")
    service.add_argument("mode", choices=["off", "on"])
    service.add_argument("--reason", required=True)
    reset = add("throttle-reset", "forget every wrong code counted (surfaces and cabinet budget)")
    reset.add_argument("--reason", required=True)
    selftest = add("selftest", "read every input; report silent boards and disagreeing sensors")
    selftest.add_argument(
        "--pulse", action="store_true", help="also open each free, closed compartment in turn"
    )
    selftest.add_argument("--yes", action="store_true", help="do not ask before pulsing")
    events = add("events", "the event log")
    events.add_argument("--since", type=int, default=None, help="events after this seq")
    events.add_argument("--limit", type=int, default=50)
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    add("outbox", "events waiting for the broker")
    add("reservations", "reservations: ids, states, deadlines")
    add("metrics", "health figures in the Prometheus text format")
    db = add("db", "the database")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    backup = db_sub.add_parser(
        "backup", help="online backup to PATH", description="online backup", parents=[common]
    )
    backup.add_argument("path", type=Path)
    db_sub.add_parser(
        "verify",
        help="integrity check and event hash chain",
        description="integrity check and event hash chain (works with the daemon stopped)",
        parents=[common],
    )
    provision = add("provision", "code key, cabinet id, broker, cloud keys (daemon stopped)")
    provision.add_argument("--cabinet-id")
    provision.add_argument(
        "--broker",
        action="append",
        default=[],
        help="[mqtts://]HOST[:PORT] of the MQTT broker (repeat for each node of a cluster)",
    )
    provision.add_argument("--tls-ca", type=Path, help="the CA that signed the broker")
    provision.add_argument("--tls-cert", type=Path, help="this cabinet's client certificate")
    provision.add_argument("--tls-key", type=Path, help="this cabinet's client key")
    provision.add_argument("--issuer", help="the cloud's command issuer (iss)")
    provision.add_argument("--code-key", type=Path, help="import this code key (else created)")
    provision.add_argument(
        "--import-key",
        type=Path,
        action="append",
        default=[],
        help="a cloud public key <kid>.pem to trust (repeatable)",
    )
    add("keys", "the cloud keys this cabinet trusts")
    enroll = add(
        "enroll",
        "zero-touch enrolment: make a key, get a certificate, cabinet id and cloud keys",
    )
    enroll.add_argument("--broker", required=True, help="the enrolment listener, mqtts://HOST:PORT")
    enroll.add_argument("--ca", type=Path, required=True, help="the CA that signed the broker")
    enroll.add_argument("--token", required=True, help="the one-time enrolment token")
    enroll.add_argument(
        "--cabinet-id", help="the id this cabinet expects (refused if the token names another)"
    )
    return parser


class Context:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._config: config_module.Config | None = None

    def config(self) -> config_module.Config:
        if self._config is None:
            path = self.args.config or Path(os.environ.get("LOCKERD_CONFIG", DEFAULT_CONFIG))
            self._config = config_module.load(path)
        return self._config

    def socket_path(self) -> Path:
        if self.args.socket is not None:
            return Path(self.args.socket)
        try:
            return self.config().maintenance.socket
        except config_module.ConfigError:
            return config_module.MaintenanceConfig().socket

    def client(self, timeout_s: float | None = 60.0) -> MaintClient:
        return MaintClient(self.socket_path(), timeout_s=timeout_s)

    def call(self, op: str, timeout_s: float | None = 60.0, **arguments: Any) -> Any:
        """One request; ``timeout_s=None`` for work whose length grows with the store."""
        with self.client(timeout_s) as client:
            return client.call(op, **arguments)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    ctx = Context(args)
    try:
        return COMMANDS[args.command](ctx)
    except NotRunning as exc:
        print(f"lockerctl: {exc}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    except (CommandFailed, Refused) as exc:
        print(f"lockerctl: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except config_module.ConfigError as exc:
        print("lockerctl: configuration problems:", *exc.problems, sep="\n  ", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


def _out(ctx: Context, result: Any, human: Callable[[Any], str]) -> None:
    if ctx.args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(human(result))


def _table(rows: list[list[str]]) -> str:
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _status(ctx: Context) -> int:
    result = ctx.call("status")

    def human(s: dict[str, Any]) -> str:
        boards = ", ".join(
            f"{b['name']} {'online' if b['online'] else 'OFFLINE' if b['online'] is False else '?'}"
            for b in s["boards"]
        )
        states = ", ".join(f"{k} {v}" for k, v in s["compartments"].items())
        return "\n".join(
            [
                f"lockerd {s['version']}  cabinet {s['cabinet']}  up {s['uptime_s']:.0f} s",
                f"boards        {boards}",
                *_bus_lines(s.get("buses", [])),
                f"compartments  {states}",
                f"outbox        {s['outbox_depth']} event(s) waiting  (cloud {s['cloud']})",
                f"last sync     {s['last_sync'] or 'never'}",
                f"clock         {'trusted' if s['clock_trusted'] else 'NOT TRUSTED'}"
                f"  skew {s['clock_skew_s'] or 'unknown'}",
                f"store         {_store_line(s.get('store', {'state': 'ok'}))}",
                *_link_lines(s.get("link")),
            ]
        )

    _out(ctx, result, human)
    offline = [b for b in result["boards"] if b["online"] is False]
    # a daemon older than this lockerctl reports no store health: nothing to fail on
    store_ok = result.get("store", {"state": "ok"})["state"] == "ok"
    certificate_ok = not _certificate_failed(result.get("link"))
    return EXIT_FAILED if offline or not store_ok or not certificate_ok else 0


def _bus_lines(buses: list[dict[str, Any]]) -> list[str]:
    """One line per bus: how often it is read now, and why (docs/adr/0022, 0034)."""
    return [
        f"{'buses' if i == 0 else '':<14}{b['bus']}: a round every {b['round_ms']:.0f} ms"
        + (
            " (at rest: every door closed)"
            if b["at_rest"]
            else " (a door open, being unlocked, unread or its lock faulted)"
        )
        + (f", a read {b['read_ms']:.1f} ms" if b["read_ms"] else "")
        for i, b in enumerate(buses)
    ]


def _store_line(store: dict[str, Any]) -> str:
    if store["state"] == "ok":
        return "ok"
    if store["state"] == "failing":
        return f"CANNOT WRITE ({store['failure']}); {store['facts_waiting']} door fact(s) waiting"
    return f"DEGRADED ({store['degraded']}): running on the disk reserve, no new parcels taken"


def _certificate_text(cert: dict[str, Any]) -> str:
    where = f"{cert['path'] or 'none'}  expires {cert['not_after'] or 'unknown'}"
    return where + (f"  {cert['problem'].upper()}" if cert["problem"] else "")


def _link_lines(link: dict[str, Any] | None) -> list[str]:
    if not link:
        return []
    lines = [f"broker        {link['broker'] or '-'}  (commands: {link['commands']})"]
    if link["certificate"] is not None:
        lines.append(f"certificate   {_certificate_text(link['certificate'])}")
    return lines


def _certificate_failed(link: dict[str, Any] | None) -> bool:
    cert = (link or {}).get("certificate")
    return bool(cert and cert.get("failed"))


def _doors(ctx: Context) -> int:
    rows = ctx.call("doors")

    def table(rows: list[dict[str, Any]]) -> str:
        head = ["ID", "SIZE", "STATE", "DOOR", "LOCK", "OCCUPANCY", "FAULT", "RESERVATION"]
        body = [
            [
                r["id"],
                r["size"],
                r["state"],
                r["door"],
                r["lock"],
                r["occupancy"] or "-",
                ",".join(r["fault"]) or "-",
                r["reservation"] or "-",
            ]
            for r in rows
        ]
        return _table([head, *body])

    def grid(rows: list[dict[str, Any]]) -> str:
        cells = {(r["column"], r["row"]): r for r in rows}
        if len(cells) < len(rows):  # no layout configured: one column per board order
            return table(rows)
        columns = sorted({c for c, _ in cells})
        lines = []
        for row in sorted({r for _, r in cells}):
            parts = []
            for col in columns:
                r = cells.get((col, row))
                if r is None:
                    parts.append(" " * 16)
                    continue
                mark = "!" if r["fault"] else ("o" if r["door"] == "open" else " ")
                parts.append(f"[{r['id']:>4} {r['size']:<2} {r['state'][:4]:<4}{mark}]".ljust(16))
            lines.append(" ".join(parts).rstrip())
        return "\n".join(lines)

    _out(ctx, rows, grid if ctx.args.grid else table)
    return 0


def _open(ctx: Context) -> int:
    result = ctx.call(
        "open", id=ctx.args.id, reason=ctx.args.reason, reservation=ctx.args.reservation
    )
    _out(ctx, result, lambda r: f"{r['compartment']}: {r['result']}")
    return 0


def _throttle_reset(ctx: Context) -> int:
    result = ctx.call("throttle.reset", reason=ctx.args.reason)
    _out(ctx, result, lambda r: f"throttle reset ({r['reset']} rows)")
    return 0


def _service(ctx: Context) -> int:
    result = ctx.call(
        "service", id=ctx.args.id, in_service=ctx.args.mode == "on", reason=ctx.args.reason
    )
    _out(
        ctx,
        result,
        lambda r: f"{r['compartment']}: " + ("in service" if r["in_service"] else "out of service"),
    )
    return 0


def _selftest(ctx: Context) -> int:
    if ctx.args.pulse and not ctx.args.yes:
        if not sys.stdin.isatty():
            print("lockerctl: --pulse opens doors; confirm with --yes", file=sys.stderr)
            return EXIT_USAGE
        answer = input("This opens every free, closed compartment in turn. Continue? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            return EXIT_FAILED
    with MaintClient(ctx.socket_path(), timeout_s=None) as client:
        result = client.call("selftest", pulse=bool(ctx.args.pulse))

    def human(r: dict[str, Any]) -> str:
        lines = ["selftest: " + ("ok" if r["ok"] else "PROBLEMS")]
        lines += [f"  silent board {s['board']}: {s['error']}" for s in r["silent_boards"]]
        lines += [
            f"  {d['compartment']} {d['sensor']} reads {d['read']} but "
            + (
                f"supervisor says {d['supervisor']}"
                if "supervisor" in d
                else f"store says {d['store']}"
            )
            for d in r["disagree"]
        ]
        lines += [
            f"  {f['compartment']} fault: {','.join(f['fault'])}" for f in r.get("faults", [])
        ]
        lines += [f"  pulsed {p['compartment']}: {p['result']}" for p in r["pulsed"]]
        store = r.get("store", {"state": "ok"})
        if store["state"] != "ok":
            lines.append(f"  store: {_store_line(store)}")
        cert = r.get("certificate")
        if cert is not None and cert["problem"]:
            lines.append(f"  client certificate {_certificate_text(cert)}")
        return "\n".join(lines)

    _out(ctx, result, human)
    return 0 if result["ok"] else EXIT_FAILED


def _event_line(e: dict[str, Any]) -> str:
    data = " ".join(f"{k}={v}" for k, v in sorted(e["data"].items()))
    return f"{e['seq']:>8}  {e['ts']}  {e['type']}  {data}".rstrip()


def _events(ctx: Context) -> int:
    since = ctx.args.since
    if ctx.args.follow:
        with MaintClient(ctx.socket_path(), timeout_s=None) as client:
            start = since if since is not None else -ctx.args.limit
            for event in client.follow(start):
                print(
                    json.dumps(event, sort_keys=True) if ctx.args.json else _event_line(event),
                    flush=True,
                )
        return 0
    result = ctx.call(
        "events", since=-ctx.args.limit if since is None else since, limit=ctx.args.limit
    )
    _out(ctx, result, lambda es: "\n".join(_event_line(e) for e in es))
    return 0


def _outbox(ctx: Context) -> int:
    result = ctx.call("outbox")
    _out(
        ctx,
        result,
        lambda r: (
            f"{r['depth']} event(s) waiting for the broker\n"
            + "\n".join(f"{e['seq']:>8}  {e['ts']}  {e['type']}" for e in r["oldest"])
        ),
    )
    return 0


def _reservations(ctx: Context) -> int:
    rows = ctx.call("reservations")
    _out(
        ctx,
        rows,
        lambda rs: _table(
            [["ID", "STATE", "KIND", "COMPARTMENT", "RESERVED UNTIL", "EXPIRES"]]
            + [
                [
                    r["id"],
                    r["state"],
                    r["kind"] or "-",
                    r["compartment"] or "-",
                    _when(r["reserved_until"]),
                    _when(r["expires_at"]),
                ]
                for r in rs
            ]
        ),
    )
    return 0


def _metrics(ctx: Context) -> int:
    text = ctx.call("metrics")
    sys.stdout.write(json.dumps({"text": text}) + "\n" if ctx.args.json else text)
    return 0


def _db(ctx: Context) -> int:
    from . import offline

    if ctx.args.db_command == "backup":
        target = ctx.args.path.absolute()
        try:
            # a copy of a large store takes minutes on a Pi: wait for it, whatever it takes
            result = ctx.call("db.backup", timeout_s=None, path=str(target))
        except NotRunning:
            result = offline.backup_offline(ctx.config(), target)
        _out(ctx, result, lambda r: f"backed up to {r['path']} ({r['bytes']} bytes)")
        return 0
    try:
        result = ctx.call("db.verify", timeout_s=None)
    except NotRunning:
        result = offline.verify_offline(ctx.config())

    def human(r: dict[str, Any]) -> str:
        lines = [
            "integrity: " + ", ".join(r["integrity"]),
            f"chain: {'ok' if r['chain_ok'] else 'BROKEN'} ({r['events']} events,"
            f" seq {r['first_seq']}..{r['last_seq']})",
        ]
        if not r["chain_ok"]:
            lines.append(f"  first bad seq {r['first_bad_seq']}: {r['problem']}")
        return "\n".join(lines)

    _out(ctx, result, human)
    return 0 if result["ok"] else EXIT_FAILED


def _provision(ctx: Context) -> int:
    from . import offline

    path = ctx.args.config or Path(os.environ.get("LOCKERD_CONFIG", DEFAULT_CONFIG))
    result = offline.provision(
        path,
        cabinet_id=ctx.args.cabinet_id,
        broker=tuple(ctx.args.broker),
        issuer=ctx.args.issuer,
        code_key=ctx.args.code_key,
        import_keys=tuple(ctx.args.import_key),
        tls_ca=ctx.args.tls_ca,
        tls_cert=ctx.args.tls_cert,
        tls_key=ctx.args.tls_key,
    )
    _out(
        ctx,
        result,
        lambda r: "\n".join(
            [
                f"cabinet {r['cabinet']}",
                f"broker {r['broker'] or 'none (offline)'}",
                f"code key {r['code_key']}",
            ]
            + [f"trusted key {k['kid']} {k['fingerprint']}" for k in r["imported_keys"]]
        ),
    )
    return 0


def _enroll(ctx: Context) -> int:
    from .enrol import enroll

    path = ctx.args.config or Path(os.environ.get("LOCKERD_CONFIG", DEFAULT_CONFIG))
    result = enroll(path, ctx.args.broker, ctx.args.ca, ctx.args.token, ctx.args.cabinet_id)
    _out(
        ctx,
        result,
        lambda r: "\n".join(
            [
                f"enrolled as cabinet {r['cabinet']}",
                f"brokers {', '.join(r['brokers'])}",
                f"certificate {r['certificate']} (key {r['key']}, mode 0600)",
                f"trusted keys {', '.join(r['trusted_keys'])} (issuer {r['issuer']})",
                "start or restart lockerd: it now connects with mutual TLS",
            ]
        ),
    )
    return 0


def _keys(ctx: Context) -> int:
    from . import offline

    keys = offline.list_keys(ctx.config())
    _out(
        ctx,
        keys,
        lambda ks: _table([["KID", "FINGERPRINT"]] + [[k["kid"], k["fingerprint"]] for k in ks]),
    )
    return 0


COMMANDS: dict[str, Callable[[Context], int]] = {
    "status": _status,
    "doors": _doors,
    "open": _open,
    "service": _service,
    "throttle-reset": _throttle_reset,
    "selftest": _selftest,
    "events": _events,
    "outbox": _outbox,
    "reservations": _reservations,
    "metrics": _metrics,
    "db": _db,
    "provision": _provision,
    "keys": _keys,
    "enroll": _enroll,
}


if __name__ == "__main__":
    sys.exit(main())
