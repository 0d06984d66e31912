"""A throwaway Debian 12 root booted with systemd as PID 1 (systemd-nspawn), for the package test.

The root is made once by mmdebstrap from the mirror apt already uses on this machine (read
from its sources at run time) and cached as a tarball under build/; each test unpacks a
fresh copy. Commands run inside with nsenter, so no machined or D-Bus is needed on the host.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

SUITE = "bookworm"
# What the package test needs in the root besides the package's own dependencies:
# systemd as init, python3 for the venv, passwd/util-linux (minbase) for users and runuser.
INCLUDE = ("systemd", "systemd-sysv", "dbus", "python3", "python3-venv")
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
PATH_INSIDE = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def debian_mirror(sources: Sequence[Path] = APT_SOURCES) -> str | None:
    """The first Debian mirror URI of this machine's apt sources (one-line or deb822)."""
    files: list[Path] = []
    for source in sources:
        if source.is_dir():
            files.extend(sorted(p for p in source.iterdir() if p.suffix in (".list", ".sources")))
        elif source.is_file():
            files.append(source)
    for file in files:
        try:
            text = file.read_text()
        except OSError:
            continue
        uri = mirror_in(text, deb822=file.suffix == ".sources")
        if uri is not None:
            return uri
    return None


def mirror_in(text: str, deb822: bool) -> str | None:
    """The URI of a source serving Debian's main suites, from one sources file's text."""
    if deb822:
        for stanza in re.split(r"\n\s*\n", text):
            fields = dict(
                (m[1].lower(), m[2].strip())
                for m in re.finditer(r"^([A-Za-z-]+):(.*)$", stanza, re.M)
            )
            suites = fields.get("suites", "").split()
            if "deb" in fields.get("types", "").split() and SUITE in suites:
                if fields.get("enabled", "yes").lower() == "no":
                    continue
                uris = fields.get("uris", "").split()
                if uris and not uris[0].rstrip("/").endswith("-security"):
                    return uris[0]
        return None
    for line in text.splitlines():
        match = re.fullmatch(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+.*", line)
        if match and match[2] == SUITE and not match[1].rstrip("/").endswith("-security"):
            return match[1]
    return None


def why_no_container() -> str | None:
    """Why this machine cannot boot a container, or None when it should be able to."""
    if os.geteuid() != 0:
        return "booting a container needs root (systemd-nspawn, mmdebstrap)"
    for tool, package in (
        ("systemd-nspawn", "systemd-container"),
        ("mmdebstrap", "mmdebstrap"),
        ("unshare", "util-linux"),
        ("nsenter", "util-linux"),
    ):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian package {package})"
    if debian_mirror() is None:
        return f"no Debian {SUITE} mirror in this machine's apt sources"
    # A container without CAP_SYS_ADMIN (a default Docker one) cannot make namespaces.
    probe = subprocess.run(
        ["unshare", "--mount", "--pid", "--fork", "true"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        return f"cannot create namespaces here (unshare: {probe.stderr.strip()})"
    return None


class NoRoot(Exception):
    """The root could not be made (no network to the mirror, say); the message says why."""


def cached_root(cache_dir: Path, mirror: str) -> Path:
    """The mmdebstrap tarball of the test root, made once (about a minute) and reused."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()
    tarball = cache_dir / f"{SUITE}-{arch}-{'-'.join(INCLUDE)}.tar"
    if tarball.exists():
        return tarball
    # A name of this process's (mmdebstrap reads the format from ".tar"): two runs making
    # the root at once each rename a whole tarball into place, never share a half-made one.
    partial = tarball.with_suffix(f".partial-{os.getpid()}.tar")
    result = subprocess.run(
        ["mmdebstrap", "--variant=minbase", f"--include={','.join(INCLUDE)}", SUITE,
         str(partial), mirror],
        capture_output=True, text=True, timeout=1200, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise NoRoot(f"mmdebstrap {SUITE} from {mirror} failed: {result.stderr[-1500:]}")
    partial.rename(tarball)
    return tarball


def unpack(tarball: Path, into: Path) -> Path:
    into.mkdir(parents=True)
    # GNU tar as root keeps owners, modes and device nodes, as mmdebstrap wrote them.
    subprocess.run(["tar", "--numeric-owner", "-xf", str(tarball), "-C", str(into)], check=True)
    return into


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


class Container:
    """A Debian root booted with systemd-nspawn; ``run`` executes a command inside it."""

    def __init__(self, root: Path, binds: Sequence[tuple[Path, str]], console: Path) -> None:
        self.root = root
        self.binds = list(binds)
        self.console = console
        self.process: subprocess.Popen[bytes] | None = None
        self.init_pid: int | None = None

    def boot(self, within_s: float = 120.0) -> None:
        # nspawn keeps per-machine state under /run/systemd/nspawn and insists that it is
        # a tmpfs; a private mount namespace gives it one without touching the host's /run.
        # --register=no/--keep-unit: no machined or D-Bus needed on the host.
        binds = [f"--bind={host}:{inside}" for host, inside in self.binds]
        nspawn = ["systemd-nspawn", "--quiet", "--boot", f"--directory={self.root}",
                  "--machine=lockerd-test", "--register=no", "--keep-unit",
                  "--private-network", "--console=passive", *binds]  # fmt: skip
        script = 'mkdir -p /run/systemd && mount -t tmpfs tmpfs /run/systemd && exec "$@"'
        with self.console.open("wb") as log:
            self.process = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                 "nspawn", *nspawn],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the container stopped while booting:\n{self.log()}")
            self.init_pid = self.init_pid or self._find_init()
            if self.init_pid is not None:
                state = self.run("systemctl", "is-system-running").stdout.strip()
                if state in ("running", "degraded"):
                    return
            time.sleep(0.5)
        raise RuntimeError(f"the container did not finish booting in {within_s} s:\n{self.log()}")

    def _find_init(self) -> int | None:
        """The container's PID 1: the process named systemd below nspawn."""
        assert self.process is not None
        parents = {self.process.pid}
        for _ in range(3):
            children = set()
            for stat in Path("/proc").glob("[0-9]*/stat"):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    fields = stat.read_text().rsplit(")", 1)[1].split()
                    if int(fields[1]) in parents:
                        pid = int(stat.parent.name)
                        if (stat.parent / "comm").read_text().strip() == "systemd":
                            return pid
                        children.add(pid)
            parents = children
        return None

    def run(self, *argv: str, user: str | None = None, timeout: float = 120.0) -> Result:
        assert self.init_pid is not None, "boot() first"
        inner = ["runuser", "-u", user, "--", *argv] if user else list(argv)
        result = subprocess.run(
            ["nsenter", f"--target={self.init_pid}", "--mount", "--uts", "--ipc", "--net",
             "--pid", "--cgroup", "--root", "--wd",
             "env", "-i", f"PATH={PATH_INSIDE}", "LANG=C.UTF-8", "SYSTEMD_COLORS=0",
             "SYSTEMD_PAGER=", *inner],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        return Result(result.returncode, result.stdout, result.stderr)

    def sh(self, command: str, user: str | None = None, timeout: float = 120.0) -> Result:
        return self.run("sh", "-c", command, user=user, timeout=timeout)

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.console.read_text(errors="replace")[-4000:]
        return ""

    def shutdown(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        if self.init_pid is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.run("systemctl", "poweroff", "--no-block", timeout=20)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def booted(root: Path, binds: Sequence[tuple[Path, str]], console: Path) -> Iterator[Container]:
    container = Container(root, binds, console)
    try:
        container.boot()
        yield container
    finally:
        container.shutdown()
