"""A flood of forged commands on ``cmd``: each answered cheaply, in order, and the genuine one
behind it applied (docs/adr/0033; ``bench/forged_flood`` measures the rates).

A real Mosquitto, the cabinet's CloudSync on a real SQLite file, commands signed by
``hil.cloud``. The forged kinds are those the bench sends: a bad signature (a key the
cabinet does not trust, under the trusted ``kid``), an unknown ``kid``, bytes that are
not a JWT, and a command correctly signed for another cabinet (wrong ``aud``).
"""

from __future__ import annotations

import os
import socket
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from hil.cloud import ReferenceCloud, Signer
from lockerd.store import Applied, Transaction
from lockerd.store.worker import AsyncStore
from lockerd.sync.apply import Decide
from lockerd.sync.commands import ConfigSet, DoorOpen, Rejection, RejectReason
from lockerd.sync.refusals import REJECTED_EVENTS_PER_MINUTE, RejectedEvents, plan
from tests.lockerd.sync.harness import Cabinet
from tests.support.waiting import wait_for

FORGED = 240
KINDS = ("bad signature", "unknown kid", "not a JWT", "wrong aud")
OPEN = {"compartment": "A01", "reason": "test", "reservation_id": None}


class Doors:
    """The cabinet's actions (RemoteActions): opens committed for real, pulses counted."""

    def __init__(self, store: AsyncStore) -> None:
        self.store = store
        self.pulses: list[str] = []

    def knows(self, compartment: str) -> bool:
        return compartment in ("A01", "A02")

    def hold_polls(self, compartment: str, checked: bool = True) -> Callable[[], None]:
        return lambda: None

    async def commit_opens(self, opens: Sequence[tuple[DoorOpen, Decide]]) -> None:
        def decide(tx: Transaction) -> None:
            for command, also in opens:
                if also(tx):
                    tx.record_unlock_intent(command.compartment, "remote", command.reason)

        await self.store.write(decide)

    async def pulse_open(self, command: DoorOpen) -> Applied:
        self.pulses.append(command.compartment)
        return Applied.applied()

    async def set_config(self, command: ConfigSet) -> Applied:
        return Applied.applied()


class FailingCommits:
    """Stands between the store and its connection; fails every COMMIT while ``failing``."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.failing = False
        self.failed = 0

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        if sql == "COMMIT" and self.failing:
            self.failed += 1
            raise sqlite3.OperationalError("disk I/O error")
        return self._conn.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def forged(signer: Signer, count: int) -> list[tuple[str, str | None, bytes]]:
    """``count`` forged door.opens, the four kinds in turn: (kind, readable jti, payload)."""
    stranger = Ed25519PrivateKey.generate()
    bad_signature = Signer(signer.issuer, signer.kid, stranger, signer.audience)
    unknown_kid = Signer(signer.issuer, "cloud-unknown", stranger, signer.audience)
    other_cabinet = Signer(signer.issuer, signer.kid, signer.key, "SOME-OTHER-CABINET")
    made: list[tuple[str, str | None, bytes]] = []
    for index in range(count):
        kind = KINDS[index % len(KINDS)]
        if kind == "not a JWT":
            made.append((kind, None, b"not-a-jwt-" + os.urandom(12).hex().encode()))
            continue
        maker = {"bad signature": bad_signature, "unknown kid": unknown_kid}.get(
            kind, other_cabinet
        )
        jti, token = maker.sign("door.open", OPEN)
        made.append((kind, jti, token))
    return made


def with_doors(cabinet: Cabinet) -> Doors:
    doors = Doors(cabinet.sync.store)
    cabinet.sync.actions = doors
    return doors


async def rejected_events(cabinet: Cabinet) -> int:
    events = await cabinet.sync.store.read(lambda s: s.events_after(0, 100_000))
    return sum(1 for event in events if event.type == "command.rejected")


async def test_the_cabinet_sends_its_packets_at_once(cabinet: Cabinet) -> None:
    # With Nagle on, an answer on acks waited for the broker's delayed TCP ACK (40 ms)
    # behind the PUBACK before it: 26 refusals a second at most.
    session = cabinet.sync.session
    assert session is not None
    sock = session._client.socket()
    assert sock is not None
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


async def test_a_flood_of_forged_commands_is_answered_and_the_genuine_one_applied(
    cloud: ReferenceCloud, cabinet: Cabinet
) -> None:
    doors = with_doors(cabinet)
    commits: list[int] = []
    cabinet.store.commit_listeners.append(lambda _events: commits.append(1))
    flood = forged(cabinet.signer, FORGED)
    for _kind, _jti, payload in flood:
        cloud.send(cabinet.id, payload)
    jti, token = cabinet.signer.sign("door.open", OPEN)
    cloud.send(cabinet.id, token)
    view = cloud.view(cabinet.id)
    assert (await cloud.wait_ack(cabinet.id, jti, timeout_s=60))["status"] == "applied"
    await wait_for(lambda: len(view.acks) >= FORGED + 1, timeout=30, what="every answer")

    answers = list(view.acks)
    assert len(answers) == FORGED + 1
    refusals = [a for a in answers if a["cmd"] != jti]
    assert all(a["status"] == "rejected" for a in refusals)
    # each forged message answered with its readable jti (null when none is readable)
    assert sorted(str(a["cmd"]) for a in refusals) == sorted(str(j) for _, j, _ in flood)
    reasons = {a["reason"] for a in refusals}
    assert reasons == {
        "bad_signature",
        "unknown_kid",
        "malformed: not a JWS compact serialization",
        "wrong_audience",
    }
    assert doors.pulses == ["A01"]
    assert await rejected_events(cabinet) <= REJECTED_EVENTS_PER_MINUTE
    # No commit for a refusal that leaves nothing durable: only the signed ones (wrong
    # aud, remembered), the event-raising ones and the genuine command may commit.
    signed = sum(1 for kind, _, _ in flood if kind == "wrong aud")
    assert len(commits) <= signed + REJECTED_EVENTS_PER_MINUTE + 2
    # Only correctly signed ids are remembered.
    for kind, forged_jti, _ in flood:
        if forged_jti is not None:
            found = await cabinet.sync.store.read(lambda s, j=forged_jti: s.command_result(j))
            assert (found is not None) == (kind == "wrong aud")

    # Every message was acknowledged to the broker: after a clean reconnect nothing comes
    # again before a new command (the broker would send unacknowledged ones first).
    await cabinet.stop()
    cabinet.start()
    await cabinet.wait_connected()
    marker, token = cabinet.signer.sign("state.request", {})
    cloud.send(cabinet.id, token)
    await cloud.wait_ack(cabinet.id, marker)
    assert [a["cmd"] for a in view.acks[len(answers) :]] == [marker]


async def test_a_command_the_store_cannot_commit_is_answered_failed_and_the_link_stays_up(
    cloud: ReferenceCloud, cabinet: Cabinet
) -> None:
    doors = with_doors(cabinet)
    view = cloud.view(cabinet.id)
    # Spend the command.rejected budget: the refusals after it need no commit at all.
    spend = forged(cabinet.signer, 4 * REJECTED_EVENTS_PER_MINUTE)
    spend = [f for f in spend if f[0] != "wrong aud"][:REJECTED_EVENTS_PER_MINUTE]
    for _kind, _jti, payload in spend:
        cloud.send(cabinet.id, payload)
    await wait_for(lambda: len(view.acks) >= len(spend), what="the first refusals answered")
    session = cabinet.sync.session
    faults = FailingCommits(cabinet.store._conn)
    cabinet.store._conn = faults  # type: ignore[assignment]
    faults.failing = True
    try:
        flood = forged(cabinet.signer, 40)  # wrong aud too: its refusal's commit fails
        for _kind, _jti, payload in flood:
            cloud.send(cabinet.id, payload)
        jti, token = cabinet.signer.sign("door.open", OPEN)
        cloud.send(cabinet.id, token)
        # Every refusal is answered, committed or not; the genuine command, which nothing
        # could write down, is answered failed, and no door opens.
        ack = await cloud.wait_ack(cabinet.id, jti, timeout_s=30)
        assert (ack["status"], ack["reason"]) == ("failed", "internal error")
        assert len(view.acks) == len(spend) + len(flood) + 1
        assert {a["status"] for a in view.acks if a["cmd"] != jti} == {"rejected"}
        assert faults.failed >= 2 and doors.pulses == []
    finally:
        faults.failing = False
        cabinet.store._conn = faults._conn
    # The link stayed up (the same session), and the failed command, acknowledged, is
    # not delivered again: the cloud decides. Sent again, it is applied.
    assert cabinet.sync.session is session and cabinet.sync.connected.is_set()
    again_jti, again = cabinet.signer.sign("door.open", OPEN)
    cloud.send(cabinet.id, again)
    assert (await cloud.wait_ack(cabinet.id, again_jti, timeout_s=30))["status"] == "applied"
    assert [a["status"] for a in view.acks if a["cmd"] == jti] == ["failed"]
    assert doors.pulses == ["A01"]


# -- the batcher, fed from outside -------------------------------------------------------


def _rejection(signed: bool) -> Rejection:
    if signed:
        return Rejection(RejectReason.WRONG_AUDIENCE, jti="j", exp=10, signed=True)
    return Rejection(RejectReason.BAD_SIGNATURE, jti="j")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.booleans(), st.floats(0, 30, allow_nan=False)), max_size=40),
        max_size=12,
    )
)
def test_refusal_plans_keep_order_and_the_event_budget(
    batches: list[list[tuple[bool, float]]],
) -> None:
    now = [0.0]
    events = RejectedEvents(lambda: now[0])
    taken: list[float] = []
    for batch in batches:
        for _signed, pause in batch:
            now[0] += pause
        rejections = [_rejection(signed) for signed, _ in batch]
        planned = plan(rejections, events)
        assert [p.rejection for p in planned] == rejections  # one each, in order
        for refusal in planned:
            # signed ones are remembered (their event is decided in the transaction);
            # an unsigned one needs the store only for its event
            assert refusal.durable == (refusal.rejection.signed or refusal.event)
            assert not (refusal.rejection.signed and refusal.event)
            if refusal.event:
                taken.append(now[0])
    for at in taken:  # no minute holds more than the budget
        assert sum(1 for other in taken if at <= other < at + 60) <= REJECTED_EVENTS_PER_MINUTE


def test_the_event_budget_refills_after_a_minute() -> None:
    now = [0.0]
    events = RejectedEvents(lambda: now[0])
    assert sum(events.take() for _ in range(100)) == REJECTED_EVENTS_PER_MINUTE
    now[0] = 60.5
    assert events.take()


@pytest.mark.parametrize("signed", [True, False])
def test_a_refusal_is_durable_only_when_it_must_be(signed: bool) -> None:
    events = RejectedEvents(lambda: 0.0, per_minute=0)
    [refusal] = plan([_rejection(signed)], events)
    assert refusal.durable is signed
