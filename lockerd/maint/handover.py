"""``lockerctl open ID --reason R --reservation RID``: a technician hands a parcel over.

The recipient lost the code and the technician checked who they are: the door opens
through the flows, which record a pickup step with method ``technician`` and the reason,
so the close completes the pickup and ``parcel.picked_up`` tells the cloud why.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .protocol import Refused

if TYPE_CHECKING:
    from ..flows import Flows

# The cloud's reservation ids (the contract's: printable ASCII, no spaces, 1..128).
_RESERVATION_ID = re.compile(r"[\x21-\x7e]{1,128}")


async def handover_open(flows: Flows, compartment: str, reason: str, reservation: Any) -> Any:
    from ..flows.handover import technician_handover
    from ..flows.results import Opened

    if not isinstance(reservation, str) or not _RESERVATION_ID.fullmatch(reservation):
        raise Refused("--reservation must be a reservation id (printable, no spaces, 1-128)")
    result = await technician_handover(flows, compartment, reason, reservation)
    if not isinstance(result, Opened):
        detail = getattr(result, "reason", None)
        why = detail.value if detail is not None else type(result).__name__
        raise Refused(f"{compartment} not opened for {reservation}: {why}")
    return {"compartment": compartment, "result": "opened", "reservation": reservation}
