"""The maintenance socket's file: whether another daemon answers there, and who may open it."""

from __future__ import annotations

import grp
import logging
import os
import socket
from pathlib import Path

from ..logs import fact

log = logging.getLogger("lockerd.maint")


def in_use(path: Path) -> bool:
    """Another process answers on the socket at ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def restrict(path: Path, group: str) -> None:
    """The socket file for its owner and ``group`` only (mode 0660); an empty group keeps
    the daemon's own."""
    os.chmod(path, 0o660)
    if not group:
        return  # configured to stay in the daemon's own group
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        fact(
            log,
            "maint.no_group",
            logging.WARNING,
            group=group,
            detail="socket left in the daemon's own group",
        )
        return
    try:
        os.chown(path, -1, gid)
    except PermissionError:
        fact(
            log,
            "maint.chgrp_refused",
            logging.WARNING,
            group=group,
            detail="the daemon's user must be in that group (SupplementaryGroups=)",
        )
