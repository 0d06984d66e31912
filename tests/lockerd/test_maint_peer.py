"""Who is on the other end of the maintenance socket, when /proc hides them.

The unit's ProtectProc=invisible hides other users' processes from the daemon, so a
technician's supplementary groups cannot be read from /proc/<pid>/status there; the
group database answers instead (found by the package's boot test: a member of
lockerd-tech was refused).
"""

from __future__ import annotations

import os
import pwd

from lockerd.maint.gate import _supplementary_groups


def test_groups_of_a_process_this_daemon_can_see() -> None:
    groups = _supplementary_groups(os.getpid(), os.getuid(), os.getgid())
    assert groups == frozenset(os.getgroups())


def test_groups_from_the_account_when_proc_hides_the_peer() -> None:
    hidden_pid = 2**22 + 7  # above pid_max's default: no such process to read
    assert not os.path.exists(f"/proc/{hidden_pid}")
    name = pwd.getpwuid(os.getuid()).pw_name
    groups = _supplementary_groups(hidden_pid, os.getuid(), os.getgid())
    assert groups == frozenset(os.getgrouplist(name, os.getgid()))
    assert os.getgid() in groups


def test_unknown_account_has_no_groups() -> None:
    unused = next(uid for uid in range(60000, 65000) if not _has_account(uid))
    assert _supplementary_groups(2**22 + 7, unused, unused) == frozenset()


def _has_account(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True
