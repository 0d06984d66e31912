"""``python -m bench.return_label``: what accepting a signed return label costs at the cabinet.

A return label is checked offline and booked at the cabinet (docs/adr/0027): its Ed25519
signature and claims, the jti remembered, the return booked, a compartment chosen, the
step and the unlock intent written, one commit; then the door's answer noted (a second
commit), as for every opening. The baseline, measured in the same run on the same store,
is the QR pickup token, which does the same minus the booking and the allocation, and a
drop-off by code, which allocates as a return does (typed code instead of a label). All go
through the real Flows and AsyncStore on a real SQLite file (WAL, synchronous=FULL); the
cabinet answers every unlock "opened" at once, so the figures are lockerd's own work and
its fsyncs, not a lock's.

    python -m bench.return_label [--trials 200] [--compartments 600]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench._report import aligned_table
from hil.cloud import Signer, return_label
from lockerd.cabinet import CompartmentView, DoorClosed, UnlockOutcome, UnlockResult
from lockerd.clock import SystemClock
from lockerd.codes import CodeKey, Purpose
from lockerd.flows import Flows, Opened
from lockerd.flows.returns import send_return
from lockerd.model import Actor, Size
from lockerd.qr import QrVerifier
from lockerd.reservations import Booking, ReservationKind
from lockerd.store import Store
from lockerd.store.worker import AsyncStore
from lockerd.sync.commands import TrustStore

CABINET = "CAB-BENCH"


class OpensAtOnce:
    """A cabinet whose every door opens the moment it is asked (no wire, no lock)."""

    scans = 1

    async def unlock(
        self, compartment_id: str, actor: Actor, reason: str, *, recorded: bool = False
    ) -> UnlockOutcome:
        return UnlockOutcome(compartment_id, UnlockResult.OPENED)

    def views(self) -> list[CompartmentView]:
        return []

    def on_door_closed(self, listener: Callable[[DoorClosed], None]) -> Callable[[], None]:
        return lambda: None  # no door here ever closes

    async def facts_committed(self, timeout_s: float) -> bool:
        return True  # no door fact is ever decided here

    async def first_scan(self, timeout_s: float) -> list[str]:
        return []  # no bus to read


def pickup_token(signer: Signer, rid: str) -> str:

    claims = {
        "iss": signer.issuer,
        "aud": CABINET,
        "sub": rid,
        "typ": "pickup",
        "jti": str(uuid.uuid4()),
        "exp": int(time.time()) + 600,
    }
    return jwt.encode(claims, signer.key, algorithm="EdDSA", headers={"kid": signer.kid})


def ready_parcels(store: Store, key: CodeKey, count: int) -> list[str]:
    """``count`` parcels deposited and waiting for their recipient."""
    rids = [f"R-{i}" for i in range(count)]
    with store.transaction() as tx:
        for i, rid in enumerate(rids):
            booking = Booking(
                reservation_id=rid,
                version=1,
                kind=ReservationKind.INBOUND,
                size=Size.S,
                compartment=None,
                barcodes=(f"B-{i}",),
                code_hash=key.hash(Purpose.PICKUP, f"{10_000_000 + i}"),
                reserved_until=time.time() + 86_400,
            )
            tx.upsert_reservation(booking)
            tx.assign_compartment(rid)
            tx.deposit(rid, f"B-{i}", "courier-1")
    return rids


def dropoff_bookings(store: Store, key: CodeKey, count: int) -> list[str]:
    """``count`` drop-offs booked by the cloud; returns their codes."""
    codes = [f"{20_000_000 + i}" for i in range(count)]
    with store.transaction() as tx:
        for i, code in enumerate(codes):
            booking = Booking(
                reservation_id=f"D-{i}",
                version=1,
                kind=ReservationKind.DROPOFF,
                size=Size.S,
                compartment=None,
                barcodes=(),
                code_hash=key.hash(Purpose.DROPOFF, code),
                reserved_until=time.time() + 86_400,
            )
            tx.upsert_reservation(booking)
    return codes


def ms(values: list[float], q: float) -> str:
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.2f}"


async def measure(trials: int, compartments: int, directory: Path) -> None:
    store = Store.open(directory / "lockerd.db", CABINET, SystemClock())
    store.sync_compartments([(f"C{i:03d}", Size.S) for i in range(compartments)])
    key = CodeKey(bytes(range(1, 33)))
    rids = ready_parcels(store, key, trials)
    codes = dropoff_bookings(store, key, trials)
    cloud = Ed25519PrivateKey.generate()
    signer = Signer("cloud", "k1", cloud, CABINET)
    verifier = QrVerifier(CABINET, "cloud", TrustStore({"k1": cloud.public_key()}))
    async_store = AsyncStore(store)
    # no throttle in the way: every drop-off code here is right
    flows = Flows(async_store, OpensAtOnce(), SystemClock(), key, qr=verifier)
    labels = [return_label(signer, f"RET-{i}", "S", 600) for i in range(trials)]
    pickups = [pickup_token(signer, rid) for rid in rids]
    returned: list[float] = []
    picked: list[float] = []
    dropped: list[float] = []
    # interleaved, so a disk that slows down for a while slows all alike
    for label, token, code in zip(labels, pickups, codes, strict=True):
        started = time.perf_counter()
        result = await send_return(flows, "bench", label)
        returned.append(time.perf_counter() - started)
        assert isinstance(result, Opened), result
        started = time.perf_counter()
        result = await flows.pickup_qr("bench", token)
        picked.append(time.perf_counter() - started)
        assert isinstance(result, Opened), result
        started = time.perf_counter()
        result = await flows.drop_off("bench", code)
        dropped.append(time.perf_counter() - started)
        assert isinstance(result, Opened), result
    store.close()
    print(f"return label vs QR pickup token, {trials} each, {compartments} compartments")
    rows = []
    for name, values in (
        ("return label", returned),
        ("QR pickup (baseline)", picked),
        ("drop-off code (baseline)", dropped),
    ):
        rows.append(
            [name, ms(values, 0.5), ms(values, 0.99), f"{statistics.fmean(values) * 1000:.2f}"]
        )
    for name, values in (("to QR pickup", picked), ("to drop-off code", dropped)):
        ratio = statistics.median(returned) / statistics.median(values)
        rows.append([f"ratio {name} (p50)", f"{ratio:.2f}", "", ""])
    aligned_table(["scan to door asked open", "p50 ms", "p99 ms", "mean ms"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--compartments", type=int, default=600)
    args = parser.parse_args()
    if args.compartments < args.trials * 3:
        parser.error("--compartments must be at least three times --trials")
    with tempfile.TemporaryDirectory(prefix="bench-return-") as directory:
        asyncio.run(measure(args.trials, args.compartments, Path(directory)))


if __name__ == "__main__":
    main()
