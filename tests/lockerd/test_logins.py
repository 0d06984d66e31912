"""Courier and technician logins: one credential check (lockerd/flows/login.py), each
role's answers and events as before. Real store file, real keyed hashes, real throttle."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lockerd.codes import Purpose
from lockerd.flows import CourierSession, RefusalReason, Refused, Wait
from lockerd.store import CredentialGrant, CredentialRole
from tests.support.flow_rig import Rig, flow_rig

CODE = "31415926"
BADGE = "0A0B0C0D"
WRONG = "27182818"


@dataclass(frozen=True)
class Role:
    """One way in: the credential it needs, how it is typed, the event's purpose."""

    name: str
    role: CredentialRole
    purpose: Purpose  # of the typed secret, as code.rejected names it

    def grant(self, rig: Rig, credential_id: str, valid_until: float | None) -> None:
        key = rig.daemon.code_key
        badge = key.hash(Purpose.BADGE, BADGE) if self.purpose is Purpose.BADGE else None
        technician = self.role is CredentialRole.TECHNICIAN
        code_purpose = Purpose.TECHNICIAN if technician else Purpose.COURIER
        grant = CredentialGrant(
            credential_id, 1, self.role, key.hash(code_purpose, CODE), badge, valid_until
        )
        with rig.daemon.store.transaction() as tx:
            tx.upsert_credential(grant)

    def right(self) -> str:
        return BADGE if self.purpose is Purpose.BADGE else CODE

    async def log_in(self, rig: Rig, typed: str) -> object:
        flows = rig.flows
        if self.role is CredentialRole.TECHNICIAN:
            return await flows.technician_login("kiosk", typed)
        if self.purpose is Purpose.BADGE:
            return await flows.courier_login("badge", badge=typed)
        return await flows.courier_login("kiosk", code=typed)

    def let_in(self, answer: object, credential_id: str) -> bool:
        if self.role is CredentialRole.TECHNICIAN:
            return answer == credential_id
        return isinstance(answer, CourierSession) and answer.credential_id == credential_id


ROLES = [
    Role("courier code", CredentialRole.COURIER, Purpose.COURIER),
    Role("courier badge", CredentialRole.COURIER, Purpose.BADGE),
    Role("technician code", CredentialRole.TECHNICIAN, Purpose.TECHNICIAN),
]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with flow_rig("modbus-tcp", tmp_path / "state") as rig:
        yield rig


def rejected(rig: Rig) -> list[dict[str, object]]:
    return rig.events("code.rejected")


@pytest.mark.parametrize("way", ROLES, ids=lambda r: r.name)
async def test_a_right_code_in_date_lets_in_and_costs_no_guess(rig: Rig, way: Role) -> None:
    way.grant(rig, "C-1", rig.daemon.clock.wall() + 3600)
    assert way.let_in(await way.log_in(rig, way.right()), "C-1")
    assert rejected(rig) == []


@pytest.mark.parametrize("way", ROLES, ids=lambda r: r.name)
async def test_an_expired_credential_is_a_wrong_code(rig: Rig, way: Role) -> None:
    way.grant(rig, "C-OLD", rig.daemon.clock.wall() - 60)
    assert await way.log_in(rig, way.right()) == Refused(RefusalReason.CODE_NOT_VALID)
    # counted as a failure like any wrong code, naming what was typed, never the code
    assert rejected(rig) == [{"purpose": way.purpose.value, "failures_in_window": 1}]


@pytest.mark.parametrize("way", ROLES, ids=lambda r: r.name)
async def test_wrong_codes_are_refused_then_throttled_even_the_right_one(
    rig: Rig, way: Role
) -> None:
    way.grant(rig, "C-1", None)
    wrong = "0E0E0E0E" if way.purpose is Purpose.BADGE else WRONG
    answers: list[object] = []
    for _ in range(30):
        answer = await way.log_in(rig, wrong)
        answers.append(answer)
        if isinstance(answer, Wait):
            break
    # [throttle] as configured: free_failures wrong codes, one more that starts the
    # delay, then the wait (2 s: far longer than the next try takes)
    free = rig.daemon.config.throttle.free_failures
    assert answers[:-1] == [Refused(RefusalReason.CODE_NOT_VALID)] * (free + 1), answers
    throttled = answers[-1]
    assert isinstance(throttled, Wait), answers
    # while throttled the right code is not even checked: the same wait, no way in
    assert await way.log_in(rig, way.right()) == throttled
    # every wrong code checked is one code.rejected naming what was typed; a try refused
    # by the wait is none (nothing was checked)
    events = rejected(rig)
    assert events == [
        {"purpose": way.purpose.value, "failures_in_window": n} for n in range(1, free + 2)
    ]


async def test_a_badly_formed_code_is_refused_as_such_for_both_roles(rig: Rig) -> None:
    assert await rig.flows.courier_login("kiosk", code="12") == Refused(RefusalReason.BAD_FORMAT)
    assert await rig.flows.technician_login("kiosk", "12") == Refused(RefusalReason.BAD_FORMAT)


async def test_a_credential_of_the_other_role_gets_each_roles_own_refusal(rig: Rig) -> None:
    key = rig.daemon.code_key
    with rig.daemon.store.transaction() as tx:  # a technician who also holds a badge
        tx.upsert_credential(
            CredentialGrant(
                "T-B",
                1,
                CredentialRole.TECHNICIAN,
                key.hash(Purpose.TECHNICIAN, CODE),
                key.hash(Purpose.BADGE, BADGE),
                None,
            )
        )
    # the badge is known, but not a courier's: said so, and no guess is counted
    assert await rig.flows.courier_login("badge", badge=BADGE) == Refused(
        RefusalReason.NOT_A_COURIER
    )
    assert rejected(rig) == []
    # the technician's code typed as a courier's is just a wrong courier code
    assert await rig.flows.courier_login("kiosk", code=CODE) == Refused(
        RefusalReason.CODE_NOT_VALID
    )
    # and the rig's courier code typed at service mode is a wrong technician code
    assert await rig.flows.technician_login("kiosk", "55554444") == Refused(
        RefusalReason.CODE_NOT_VALID
    )
    assert [e["purpose"] for e in rejected(rig)] == ["courier", "technician"]
