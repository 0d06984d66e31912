"""Who is on the other end of the maintenance socket, and whether they may use it.

Only root, the daemon's own user, members of the configured group and the listed
uids/gids get in. The socket file's mode says the same, but a mode is easy to loosen by
mistake, so every peer's credentials are checked again here with ``SO_PEERCRED``.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import socket
import struct
from dataclasses import dataclass

from ..config import MaintenanceConfig


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int
    groups: frozenset[int]


def peer_of(sock: socket.socket) -> Peer:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid, uid, gid, _supplementary_groups(pid, uid, gid))


def _supplementary_groups(pid: int, uid: int, gid: int) -> frozenset[int]:
    # SO_PEERCRED carries only the primary gid; a technician is usually in the group
    # as a supplementary one. /proc is racy against pid reuse, but only widens the
    # check to the groups of a process of the same uid at worst.
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Groups:"):
                    return frozenset(int(g) for g in line.split()[1:])
    except (OSError, ValueError):
        pass
    # Under the unit's ProtectProc=invisible another user's processes are hidden: ask
    # the group database which groups the peer's account is in.
    try:
        return frozenset(os.getgrouplist(pwd.getpwuid(uid).pw_name, gid))
    except (KeyError, OSError):
        return frozenset()


class Gate:
    """Who may use the socket."""

    def __init__(self, config: MaintenanceConfig) -> None:
        self.uids = {0, os.getuid(), *config.allowed_uids}
        self.gids = set(config.allowed_gids)
        with contextlib.suppress(KeyError):
            self.gids.add(grp.getgrnam(config.group).gr_gid)

    def allows(self, peer: Peer) -> bool:
        if peer.uid in self.uids:
            return True
        return peer.gid in self.gids or bool(peer.groups & self.gids)
