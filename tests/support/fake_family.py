"""A board family that lives only in the tests: it plugs in as a driver module would.

Registered by putting ``"test-relays": "tests.support.fake_family"`` into
``drivers.family.FAMILY_MODULES`` (monkeypatch), it shows that a new family needs no
change to lockerd's config reader or hardware shell.
"""

from __future__ import annotations

from drivers.base import BoardIdentity, BoardSpec, Bus, LockBoard
from drivers.family import BoardChannels, BoardTable, BusFamily, BusSettings, Link


class FakeBoard(LockBoard):
    async def pulse(self, channel: int, duration_ms: int) -> None:
        pass

    async def all_off(self) -> None:
        pass

    async def read_inputs(self) -> tuple[bool, ...]:
        return (False,) * self.spec.inputs

    async def identify(self) -> BoardIdentity:
        return BoardIdentity("test-relays", self.address, self.spec.relays, self.spec.inputs)


class FakeBus(Bus):
    def __init__(self, settings: BusSettings) -> None:
        super().__init__(settings.name)
        self.settings = settings
        self.specs: list[BoardSpec] = []

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def board(self, spec: BoardSpec) -> FakeBoard:
        self.specs.append(spec)
        return FakeBoard(spec)

    @property
    def connected(self) -> bool:
        return True


def _channels(table: BoardTable) -> BoardChannels:
    """A board of this family says how many "banks" of 4 relays and 4 inputs it has."""
    banks = table.int_list("banks")
    if banks == (0,):
        raise ZeroDivisionError("a bug in the hook")
    if len(banks) != 1 or not 1 <= banks[0] <= 3:
        table.report("banks", "give one bank count, 1..3")
        return BoardChannels(0, 0)
    return BoardChannels(4 * banks[0], 4 * banks[0])


FAMILIES = (
    BusFamily(
        "test-relays",
        Link.PINS,
        FakeBus,
        addresses=(10, 12),
        max_relays=12,
        max_inputs=12,
        board_keys=("banks",),
        board_channels=_channels,
        min_poll_s=0.2,
        location="the test bench",
    ),
)
