"""What ``lockerd check-config`` prints: a technician's one-screen view of the cabinet."""

from __future__ import annotations

from drivers.family import lookup

from ..model import Size
from .document import Config
from .sections import SecondFactor


def summary(config: Config) -> str:
    """A technician's one-screen view of the cabinet described by ``config``."""
    lines = [f"cabinet {config.cabinet.id}: {len(config.compartments)} compartments"]
    for bus in config.buses:
        # The family says where its bus is: a port and rate, a host, or a header.
        where = lookup(bus.family).where(bus.settings())
        lines.append(f"  bus {bus.name}: {bus.family} on {where}")
        for board in bus.boards:
            lines.append(
                f"    board {board.name}: address {board.address}, "
                f"{board.relays} relays, {board.inputs} inputs"
            )
    by_size: dict[Size, list[str]] = {}
    for comp in config.compartments:
        by_size.setdefault(comp.size, []).append(comp.id)
    for size in Size:
        if size in by_size:
            ids = by_size[size]
            lines.append(f"  size {size.value}: {len(ids)} ({', '.join(ids)})")
    sensed = sum(1 for c in config.compartments if c.occupancy is not None)
    lines.append(f"  occupancy sensors: {sensed} of {len(config.compartments)}")
    if config.pickup.second_factor is SecondFactor.PHONE_LAST4:
        lines.append("  pickup: code and the last 4 digits of the booking's phone")
    if config.courier.unbooked_deposits:
        lines.append("  couriers may deposit parcels with no booking ([courier])")
    if config.buzzer is not None:
        buzzer = config.buzzer
        lines.append(f"  buzzer: board {buzzer.board} relay {buzzer.channel}")
    within = [c.id for c in config.compartments if c.reach is not None and c.reach.accessible]
    unset = sum(1 for c in config.compartments if c.reach is None)
    lines.append(
        f"  within reach (accessible): {len(within)} ({', '.join(within) or 'none'})"
        + (f"; reach not set for {unset}" if unset else "")
    )
    if config.mqtt is not None:
        mqtt = config.mqtt
        link = "mutual TLS" if mqtt.tls_cert else "TLS" if mqtt.tls_ca else "plain TCP"
        nodes = ", ".join(str(e) for e in mqtt.endpoints)
        lines.append(f"  cloud: {nodes} ({link})")
    else:
        lines.append("  cloud: none (offline)")
    return "\n".join(lines)
