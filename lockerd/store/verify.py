"""The store's full check (``lockerctl db verify``), in a process of its own.

The check (:mod:`lockerd.store.full_check`) hashes every kept event again: on a
million events, tens of seconds of Python-level hashing. In a thread of the daemon it
held the interpreter lock in chunks, and the event loop waited for the lock at every
system call (a 5 ms ticker saw p99 30 ms, max 115 ms). So the running daemon spawns
``python -m lockerd.store.verify DATABASE``: the child opens the file read-only (WAL
lets it read one snapshot beside the daemon's writer), streams one JSON line per
``PROGRESS_EVERY`` events and ends with one result line; the daemon's loop only reads
those lines (docs/adr/0031-verify-in-a-process-of-its-own.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from .full_check import MAX_INTEGRITY_LINES, MAX_TEXT, Progress, VerifyError, check_store

MAX_LINE = 64 * 1024  # the longest line the daemon reads from the child
STDERR_KEPT = 2_000  # characters of the child's stderr kept for the error message
NICENESS = 10  # the child's priority below the daemon's


# -- the child --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m lockerd.store.verify DATABASE``: progress and result as JSON lines."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m lockerd.store.verify DATABASE", file=sys.stderr)
        return 2

    def say(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        # A daemon that died leaves a closed pipe: the next write ends this process.
        sys.stdout.flush()

    # Housekeeping, never urgent: on a single-core board the door loop's wakeups go first.
    # Lowering one's own priority needs no privilege; the unit allows the call.
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    try:
        result = check_store(Path(args[0]), progress=lambda checked: say({"checked": checked}))
    except VerifyError as exc:
        say({"error": str(exc)})
        return 1
    result["rss_kib"] = _peak_rss_kib()  # what the check costs in memory, for the log line
    say({"result": result})
    return 0


def _peak_rss_kib() -> int:
    """This process's peak resident memory since its exec (VmHWM).

    Not getrusage's ru_maxrss: Linux carries the forking daemon's size over into it.
    """
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


# -- the daemon's side ------------------------------------------------------------------------


async def verify_in_child(database: Path, progress: Progress | None = None) -> dict[str, Any]:
    """:func:`check_store` of ``database`` in a child process; the loop only reads lines.

    Cancelled, the child is killed and reaped before this returns. A child that dies or
    answers nonsense raises :class:`VerifyError` with a one-line reason.
    """
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            # -P: the working directory is not put on the child's import path (a lockerd/
            # found there is not ours); PYTHONPATH and the installed package still are
            "-P",
            "-m",
            "lockerd.store.verify",
            str(database),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=MAX_LINE,
        )
    except OSError as exc:  # no memory, no process slot, a sandbox that forbids it
        raise VerifyError(f"cannot start the store check's process: {exc.strerror}") from exc
    assert process.stdout is not None and process.stderr is not None
    stderr = asyncio.create_task(_tail(process.stderr))
    try:
        answer = await _read_answer(process.stdout, progress)
        returncode = await process.wait()
        if answer is None:
            raise VerifyError(_died(returncode, await stderr))
        return answer
    finally:
        stderr.cancel()
        if process.returncode is None:  # cancelled, or its output was unreadable
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            # reaped even if the caller is cancelled again meanwhile: no zombie left
            await asyncio.shield(process.wait())


async def _read_answer(
    stdout: asyncio.StreamReader, progress: Progress | None
) -> dict[str, Any] | None:
    """The child's result (None if it ended without one); raises on an unreadable line."""
    while True:
        try:
            line = await stdout.readline()
        except (ValueError, asyncio.LimitOverrunError) as exc:
            raise VerifyError("the store check sent a line too long to read") from exc
        if not line:
            return None
        try:
            message = json.loads(line)
        except ValueError as exc:
            raise VerifyError("the store check sent a line that is not JSON") from exc
        if not isinstance(message, dict):
            raise VerifyError("the store check sent a line that is not an object")
        if "checked" in message:
            checked = message["checked"]
            if type(checked) is not int or checked < 0:
                raise VerifyError("the store check sent a bad progress line")
            if progress is not None:
                progress(checked)
        elif "error" in message:
            raise VerifyError(str(message["error"])[:MAX_TEXT])
        elif "result" in message:
            return _checked_result(message["result"])
        else:
            raise VerifyError("the store check sent a line of no known kind")


_FIELDS: dict[str, tuple[type, ...]] = {
    "chain_ok": (bool,),
    "ok": (bool,),
    "events": (int,),
    "last_seq": (int,),
    "first_seq": (int, type(None)),
    "first_bad_seq": (int, type(None)),
    "problem": (str, type(None)),
    "rss_kib": (int,),
}


def _checked_result(result: Any) -> dict[str, Any]:
    """The result line, each field of the type it must have, nothing else."""
    if not isinstance(result, dict):
        raise VerifyError("the store check sent a result that is not an object")
    checked: dict[str, Any] = {}
    for name, kinds in _FIELDS.items():
        value = result.get(name)
        # bool is an int: a count must not be True
        if type(value) not in kinds:
            raise VerifyError(f"the store check sent a result with a bad {name!r}")
        checked[name] = value
    integrity = result.get("integrity")
    if (
        not isinstance(integrity, list)
        or not 0 < len(integrity) <= MAX_INTEGRITY_LINES
        or not all(isinstance(line, str) and len(line) <= MAX_TEXT for line in integrity)
    ):
        raise VerifyError("the store check sent a result with a bad 'integrity'")
    checked["integrity"] = integrity
    return checked


async def _tail(stream: asyncio.StreamReader) -> str:
    """Read the child's stderr to its end (so it never blocks on it); keep its last part."""
    kept = b""
    while chunk := await stream.read(4096):
        kept = (kept + chunk)[-STDERR_KEPT:]
    return kept.decode(errors="replace")


def _died(returncode: int, stderr: str) -> str:
    """One line: how the child ended without an answer, and its last word if any."""
    if returncode < 0:
        try:
            how = f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            how = f"was killed by signal {-returncode}"
    else:
        how = f"exited with status {returncode}"
    last = next((line for line in reversed(stderr.splitlines()) if line.strip()), "")
    said = f" ({last.strip()[:200]})" if last else ""
    return f"the store check's process {how} before it answered{said}; run it again"


if __name__ == "__main__":
    sys.exit(main())
