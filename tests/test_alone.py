"""tests/support/alone.py: a test marked ``alone`` waits for those under way and holds
back those that come after it, across worker processes (flock, so threads show it too:
each turn opens the lock files anew)."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

from tests.support import alone


def held(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases it, if it was taken
    return False


def test_an_alone_test_waits_for_those_under_way_and_holds_back_those_after(
    tmp_path: Path,
) -> None:
    order: list[str] = []
    first_in = threading.Event()
    let_first_go = threading.Event()

    def first() -> None:
        with alone.turn(tmp_path, alone=False):
            order.append("first in")
            first_in.set()
            assert let_first_go.wait(30)
            order.append("first out")

    def by_itself() -> None:
        with alone.turn(tmp_path, alone=True):
            order.append("alone in")
            order.append("alone out")

    def later() -> None:
        with alone.turn(tmp_path, alone=False):
            order.append("later in")

    threads = [threading.Thread(target=first)]
    threads[0].start()
    assert first_in.wait(30)
    threads.append(threading.Thread(target=by_itself))
    threads[1].start()
    deadline = time.monotonic() + 30
    while not held(tmp_path / "alone.turnstile"):  # it waits for the room, turnstile held
        assert time.monotonic() < deadline, "the alone test never reached the turnstile"
        time.sleep(0.01)
    threads.append(threading.Thread(target=later))
    threads[2].start()
    let_first_go.set()
    for thread in threads:
        thread.join(30)
    assert order == ["first in", "first out", "alone in", "alone out", "later in"]


def test_shared_turns_overlap(tmp_path: Path) -> None:
    with alone.turn(tmp_path, alone=False), alone.turn(tmp_path, alone=False):
        assert not held(tmp_path / "alone.turnstile")
