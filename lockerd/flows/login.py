"""A courier's or a technician's credential at the cabinet: one check for both roles.

The code (or a courier's badge UID) is checked by the store in one transaction
(lockerd/store/checks.py ``verify_code``): the keyed hash compared in constant time, the
surface's throttle and the cabinet's guessing budget, the credential's validity window
and revocation, and ``code.rejected`` (with ``keypad.locked_out`` or
``throttle.attack``) committed for a failure. Only two things differ by role, and they
are kept in :data:`ROLES`: what a right credential of another role is told, and the
fact logged when someone logs in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..codes import Purpose
from ..logs import fact
from ..store import Credential, CredentialRole
from .results import LockedOut, RefusalReason, Refused, Wait

if TYPE_CHECKING:
    from .core import Flows

log = logging.getLogger("lockerd.flows")


@dataclass(frozen=True)
class RoleLogin:
    """How one role logs in: what another role's credential hears, what is logged."""

    wrong_role: RefusalReason
    logged_in: str


ROLES = {
    # a technician's badge at the courier's reader: known, but not a courier's
    CredentialRole.COURIER: RoleLogin(RefusalReason.NOT_A_COURIER, "courier.logged_in"),
    CredentialRole.TECHNICIAN: RoleLogin(RefusalReason.CODE_NOT_VALID, "technician.logged_in"),
}


async def log_in(
    flows: Flows, surface: str, role: CredentialRole, purpose: Purpose, typed: str
) -> Credential | Refused | Wait | LockedOut:
    """Check ``typed`` (a code of ``purpose``, or a badge UID) for a credential of
    ``role`` at ``surface``: the credential, or the answer the person gets."""
    verdict = await flows.store.write(
        lambda tx: tx.verify_code(flows.code_key, surface, purpose, typed)
    )
    refusal = flows.verdict_refusal(verdict)
    if refusal is not None:
        return refusal
    credential = verdict.credential
    how = ROLES[role]
    if credential is None or credential.role is not role:
        return Refused(how.wrong_role)
    fact(log, how.logged_in, credential=credential.id, surface=surface)
    return credential
