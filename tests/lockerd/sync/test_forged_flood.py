"""A flood of forged commands on ``cmd``: each answered cheaply, in order, the genuine one behind it
soon after (docs/adr/0033; ``bench/forged_flood`` measures the rates).
"""

from __future__ import annotations

import socket

from tests.lockerd.sync.harness import Cabinet


async def test_the_cabinet_sends_its_packets_at_once(cabinet: Cabinet) -> None:
    # With Nagle on, an answer on acks waited for the broker's delayed TCP ACK (40 ms)
    # behind the PUBACK before it: 26 refusals a second at most.
    session = cabinet.sync.session
    assert session is not None
    sock = session._client.socket()
    assert sock is not None
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
