"""``python -m hil cloud``: the reference cloud from a terminal.

    python -m hil cloud [serve]                 keys kept, events printed, enrolment answered
    python -m hil cloud send door.open --compartment A01 --reason "stuck parcel"
    python -m hil cloud send reservation.upsert --data '{...}' --pickup-code 40417
        --phone-last4 0912                      codes sent as their keyed hashes
    python -m hil cloud send reservation.upsert --data '{...}' --accessible   within reach only
    python -m hil cloud send door.open --compartment A01 --reason "ID checked" --reservation R-1
    python -m hil cloud send payment.confirmed --reservation R-1 --amount 1250 --currency EUR \
        --ref PAY-1
    python -m hil cloud token --cabinet CAB-0042   a one-time enrolment token
    python -m hil cloud return-label --reservation RET-7 --size M   a sender's return label

Keys live outside the checkout, in ``$XDG_STATE_HOME/lockerd-hil-cloud`` (by default
``~/.local/state/lockerd-hil-cloud``), one directory per cabinet, and are kept across
starts: a cabinet keeps trusting the key it was given. A broker that does not answer is
one line, and the cloud tries again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .ca import EnrolmentService, FleetCA, TokenBook
from .cloud import Provisioning, ReferenceCloud, Signer, code_hash, provision, return_label

RETRY_CAP_S = 30.0
COMMANDS = (
    "door.open",
    "reservation.upsert",
    "reservation.cancel",
    "credential.upsert",
    "credential.revoke",
    "payment.confirmed",
    "compartment.service",
    "config.set",
    "state.request",
)


def default_directory() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "lockerd-hil-cloud"


def load_or_provision(cabinet_id: str, directory: Path, kid: str) -> tuple[Provisioning, bool]:
    """The cabinet's keys from ``directory``, made once; True when they were just made."""
    private = directory / f"{kid}.key"
    code_key_file = directory / "code.key"
    trusted = directory / "trusted"
    if private.exists() and code_key_file.exists() and (trusted / f"{kid}.pem").exists():
        key = serialization.load_pem_private_key(private.read_bytes(), None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{private}: not an Ed25519 private key")
        made = Provisioning(
            cabinet_id, kid, key, code_key_file.read_bytes(), trusted, code_key_file
        )
        return made, False
    return provision(cabinet_id, directory, kid), True


def _options(suppress: bool) -> argparse.ArgumentParser:
    """Options taken before or after the action; the action's copy must not overwrite a
    value given before it with its default, hence SUPPRESS there."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--host", default=default("127.0.0.1"))
    p.add_argument("--port", type=int, default=default(1883))
    p.add_argument(
        "--username", default=default(None), help="the cloud's broker login (a fleet's ACL)"
    )
    p.add_argument("--cabinet", default=default("CAB-0001"))
    p.add_argument(
        "--dir",
        type=Path,
        default=default(None),
        help=f"where keys are kept (default {default_directory()})",
    )
    p.add_argument("--issuer", default=default("lockers-cloud"))
    p.add_argument("--kid", default=default("cloud-1"))
    p.add_argument("--tls-ca", type=Path, default=default(None), help="the broker's CA (TLS)")
    p.add_argument("--tls-cert", type=Path, default=default(None), help="the cloud's certificate")
    p.add_argument("--tls-key", type=Path, default=default(None), help="the cloud's key")
    return p


def _tls(args: argparse.Namespace) -> tuple[Path, Path | None, Path | None] | None:
    return None if args.tls_ca is None else (args.tls_ca, args.tls_cert, args.tls_key)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "cloud",
        help="the reference cloud: keys, events, signed commands, enrolment",
        description="Keeps a cloud key pair and a code key per cabinet under --dir (point"
        " lockerd's [mqtt] trusted_keys at DIR/CABINET/trusted), prints every event with"
        " seq-gap and hash-chain checks, answers enrolment requests, and sends commands.",
        parents=[_options(suppress=False)],
    )
    parser.set_defaults(run=_run, advertise=[])
    common = [_options(suppress=True)]
    commands = parser.add_subparsers(dest="cloud_command", metavar="ACTION")
    serve = commands.add_parser(
        "serve", help="print what the cabinet publishes (the default)", parents=common
    )
    serve.add_argument(
        "--advertise",
        action="append",
        default=[],
        help="a mutual-TLS broker endpoint given to enrolled cabinets (repeatable)",
    )
    send = commands.add_parser(
        "send",
        help="sign and send one command, print its ack",
        description="Data from --data (a JSON object) plus the options given.",
        parents=common,
    )
    send.add_argument("command", choices=COMMANDS)
    send.add_argument("--compartment")
    send.add_argument("--reason")
    send.add_argument("--in-service", choices=("yes", "no"))
    send.add_argument(
        "--code", help="credential.upsert: the login's code, sent as its hash under --cabinet's key"
    )
    send.add_argument(
        "--badge", help="credential.upsert: a badge UID (hex), sent as its badge_hash likewise"
    )
    send.add_argument(
        "--accessible",
        action="store_true",
        help="reservation.upsert: only a compartment within reach (low or middle)",
    )
    send.add_argument("--reservation", help="reservation_id (door.open: hand its parcel over)")
    send.add_argument("--amount", type=int, help="payment.confirmed: minor units")
    send.add_argument("--currency", help="payment.confirmed: ISO 4217 code")
    send.add_argument("--ref", help="payment.confirmed: the payment's reference")
    send.add_argument("--data", default="{}", help="the command's data as a JSON object")
    send.add_argument(
        "--pickup-code", help="reservation.upsert: the pickup code, sent as pickup_code_hash"
    )
    send.add_argument(
        "--phone-last4",
        help="reservation.upsert: the last 4 digits of the recipient's phone, sent as"
        " phone_last4_hash (the second factor of a cabinet with [pickup] second_factor)",
    )
    send.add_argument(
        "--deposit-code",
        help="reservation.upsert: the courier's deposit code, sent as deposit_code_hash",
    )
    send.add_argument("--pickup-group", help="reservation.upsert: the booking's pickup group")
    send.add_argument("--lifetime", type=int, default=60, help="seconds until exp")
    send.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the ack")
    token = commands.add_parser(
        "token", help="issue a one-time enrolment token for --cabinet", parents=common
    )
    token.add_argument("--valid-h", type=float, default=24.0, help="hours the token is valid")
    label = commands.add_parser(
        "return-label",
        help="sign a sender's return label for --cabinet; print the token and its QR code",
        description="The label opens a compartment of --size once, offline, until it expires.",
        parents=common,
    )
    label.add_argument("--reservation", required=True, help="the return's reservation id")
    label.add_argument("--size", required=True, choices=("S", "M", "L", "XL"))
    label.add_argument("--accessible", action="store_true", help="only a door within reach")
    label.add_argument("--valid-h", type=float, default=72.0, help="hours (at most 168)")


def _say(text: str) -> None:
    print(f"hil cloud: {text}", file=sys.stderr, flush=True)


async def _run(args: argparse.Namespace) -> int:
    directory: Path = args.dir or default_directory()
    cabinet_dir = directory / args.cabinet
    try:
        if args.cloud_command == "token":
            (directory / "ca").mkdir(mode=0o700, parents=True, exist_ok=True)
            book = TokenBook(directory / "ca" / "tokens.json")
            print(book.issue(args.cabinet, args.valid_h * 3600))
            return 0
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        keys, made = load_or_provision(args.cabinet, cabinet_dir, args.kid)
    except (OSError, ValueError) as exc:
        _say(f"cannot use {directory}: {exc}")
        return 1
    signer = Signer(args.issuer, args.kid, keys.signing_key, args.cabinet)
    if args.cloud_command == "send":
        return await _send(args, signer, keys.code_key)
    if args.cloud_command == "return-label":
        return _print_label(args, signer)
    print(f"trusted_keys = {keys.trusted_keys}" + ("  (new)" if made else "  (kept)"))
    print(f"code key     = {keys.code_key_file}")
    print(f"issuer       = {args.issuer}")
    ca = FleetCA(directory / "ca")
    print(f"fleet CA     = {ca.cert_file}  (the broker's cafile for client certificates)")
    pem = (keys.trusted_keys / f"{args.kid}.pem").read_bytes()
    service = EnrolmentService(
        ca, TokenBook(directory / "ca" / "tokens.json"), args.issuer, [(args.kid, pem)],
        list(args.advertise),
    )  # fmt: skip
    cloud = ReferenceCloud(
        args.host, args.port, username=args.username, enrolment=service, tls=_tls(args)
    )
    await _start(cloud, args)
    try:
        await cloud.wait_ready()
        _, token = signer.sign("state.request", {})
        cloud.send(args.cabinet, token)
        await _print_events(cloud, args.cabinet)
    finally:
        cloud.stop()
    return 0


async def _start(cloud: ReferenceCloud, args: argparse.Namespace) -> None:
    """Connect; a broker that does not answer is said once, and tried again (1 s to 30 s)."""
    delay = 1.0
    said: str | None = None
    while True:
        try:
            await asyncio.to_thread(cloud.start)
        except OSError as exc:
            why = str(exc.strerror or exc)
            if why != said:
                _say(
                    f"no broker at {args.host}:{args.port} ({why}); trying again until one answers"
                )
                said = why
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_CAP_S)
            continue
        if said is not None:
            _say(f"connected to {args.host}:{args.port}")
        return


async def _print_events(cloud: ReferenceCloud, cabinet: str) -> None:
    seen = 0
    reported = 0
    while True:
        await asyncio.sleep(1.0)
        view = cloud.view(cabinet)
        with cloud.lock:
            new = [view.events[s] for s in sorted(view.events) if s > seen]
            problems = list(view.chain_errors) + [f"gap {a}..{b}" for a, b in view.gaps]
        for event in new:
            print(f"event {event['seq']} {event['type']} {json.dumps(event['data'])}", flush=True)
            seen = max(seen, event["seq"])
        for problem in problems[reported:]:
            print(f"PROBLEM {problem}", flush=True)
        reported = len(problems)


def _print_label(args: argparse.Namespace, signer: Signer) -> int:
    import segno

    if not 0 < args.valid_h <= 168:
        _say("--valid-h must be more than 0 and at most 168 (a week)")
        return 2
    valid_s = int(args.valid_h * 3600)
    token = return_label(signer, args.reservation, args.size, valid_s, args.accessible)
    print(token, flush=True)
    segno.make(token, error="m").terminal(out=sys.stdout, compact=True)
    _say(f"return label {args.reservation} ({args.size}) for {args.cabinet}, valid {valid_s} s")
    return 0


def command_data(args: argparse.Namespace, code_key: bytes | None = None) -> dict[str, Any]:
    try:
        data = json.loads(args.data)
    except ValueError as exc:
        raise ValueError(f"--data is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("--data must be a JSON object")
    if args.compartment is not None:
        data["compartment"] = args.compartment
    if args.reason is not None:
        data["reason"] = args.reason
    if args.in_service is not None:
        data["in_service"] = args.in_service == "yes"
    if getattr(args, "accessible", False):
        data["accessible"] = True
    for option, key in (
        ("reservation", "reservation_id"),
        ("amount", "amount"),
        ("currency", "currency"),
        ("ref", "ref"),
    ):
        if getattr(args, option, None) is not None:
            data[key] = getattr(args, option)
    if args.command == "door.open":
        data.setdefault("reservation_id", None)
    # Codes typed in clear here leave only as the contract's keyed hashes.
    for option, field, purpose in (
        ("pickup_code", "pickup_code_hash", "pickup"),
        ("phone_last4", "phone_last4_hash", "phone"),
        ("deposit_code", "deposit_code_hash", "deposit"),
    ):
        digits = getattr(args, option, None)
        if digits is not None:
            if code_key is None:
                raise ValueError(f"--{option.replace('_', '-')} needs the cabinet's code key")
            data[field] = code_hash(code_key, purpose, digits)
    if getattr(args, "pickup_group", None) is not None:
        data["pickup_group"] = args.pickup_group
    code, badge = getattr(args, "code", None), getattr(args, "badge", None)
    if code is not None or badge is not None:
        if args.command != "credential.upsert" or code_key is None:
            raise ValueError("--code and --badge go with credential.upsert")
        if code is not None:
            data["code_hash"] = code_hash(code_key, str(data.get("role", "courier")), code)
        if badge is not None:
            data["badge_hash"] = code_hash(code_key, "badge", badge.upper())
    return data


async def _send(args: argparse.Namespace, signer: Signer, code_key: bytes) -> int:
    try:
        data = command_data(args, code_key)
    except ValueError as exc:
        _say(str(exc))
        return 2
    cloud = ReferenceCloud(
        args.host, args.port, client_id=f"hil-cloud-send-{os.getpid()}", persistent=False,
        username=args.username, tls=_tls(args),
    )  # fmt: skip
    try:
        await asyncio.to_thread(cloud.start)
    except OSError as exc:
        _say(f"no broker at {args.host}:{args.port} ({exc.strerror or exc})")
        return 1
    try:
        await cloud.wait_ready()
        jti, token = signer.sign(args.command, data, lifetime_s=args.lifetime)
        started = time.monotonic()
        cloud.send(args.cabinet, token)
        try:
            ack = await cloud.wait_ack(args.cabinet, jti, args.timeout)
        except TimeoutError:
            _say(f"no ack from {args.cabinet} in {args.timeout:.0f} s (is lockerd connected?)")
            return 1
        print(json.dumps(ack, sort_keys=True))
        _say(f"{args.command} {ack.get('status')} in {time.monotonic() - started:.2f} s")
        return 0 if ack.get("status") in ("applied", "duplicate") else 1
    finally:
        cloud.stop()
