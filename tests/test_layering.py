"""Dependencies point inward: drivers know no daemon, the simulator knows neither.

hil is built from the protocol documents so that it cannot drift into agreeing with a
wrong driver; drivers/ knows boards and nothing of parcels. Checked on the source, so a
stray import fails here rather than in review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "drivers": {"lockerd", "hil"},
    "hil": {"lockerd", "drivers"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_point_inward(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & FORBIDDEN[package])
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {f: bad for f, bad in offenders.items() if bad} == {}


# -- inside lockerd: a pure core, edges at the rim, the supervisor above them all ----------

# The pure core: decisions only. It reads no clock, file, socket or database of its own.
PURE_CORE = [
    "lockerd/cabinet.py",
    "lockerd/reservations.py",
    "lockerd/reservation_life.py",
    "lockerd/deadlines.py",
    "lockerd/allocation.py",
    "lockerd/unbooked_parcels.py",
    "lockerd/throttle.py",
    "lockerd/events.py",
    "lockerd/model.py",
    "lockerd/flows/results.py",
]
IO_MODULES = {
    "asyncio",
    "sqlite3",
    "sqlite_utils",
    "socket",
    "serial",
    "pymodbus",
    "paho",
    "aiohttp",
    "subprocess",
    "threading",
    "drivers",
    "lockerd.app",
    "lockerd.store",
    "lockerd.hardware",
    "lockerd.sync",
    "lockerd.kiosk",
    "lockerd.maint",
    "lockerd.notify",
    "lockerd.remote",
    "lockerd.flows.core",
}
# The edges translate between the world and the flows; the supervisor (app) wires them.
EDGES = ["lockerd/kiosk", "lockerd/maint", "lockerd/sync", "lockerd/flows", "lockerd/store"]


def runtime_imports(path: Path) -> set[str]:
    """Dotted modules ``path`` imports when it runs (not under ``if TYPE_CHECKING``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(child) for child in ast.walk(node))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _hits(imports: set[str], forbidden: set[str]) -> list[str]:
    return sorted(m for m in imports if any(m == f or m.startswith(f + ".") for f in forbidden))


@pytest.mark.parametrize("module", PURE_CORE)
def test_the_pure_core_imports_no_io(module: str) -> None:
    assert _hits(runtime_imports(ROOT / module), IO_MODULES) == []


@pytest.mark.parametrize("edge", EDGES)
def test_edges_never_import_the_supervisor(edge: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): _hits(runtime_imports(path), {"lockerd.app"})
        for path in sorted((ROOT / edge).rglob("*.py"))
    }
    assert {f: bad for f, bad in offenders.items() if bad} == {}


# Board drivers are reached by family name through drivers/family.py, so that the
# daemon never names a family and a Modbus-only cabinet never imports gpiozero.
FAMILY_DRIVERS = {"drivers.modbus", "drivers.cu", "drivers.gpio"}


def test_lockerd_reaches_board_drivers_only_by_family_name() -> None:
    offenders = {
        str(path.relative_to(ROOT)): _hits(runtime_imports(path), FAMILY_DRIVERS)
        for path in sorted((ROOT / "lockerd").rglob("*.py"))
    }
    assert {f: bad for f, bad in offenders.items() if bad} == {}


# Edges that receive narrow protocols name no Daemon at all, not even for type checking:
# what they may reach of the running daemon is written down in their own protocols
# (lockerd/maint/cabinet.py, the kiosk's KioskCabinet, the cloud's RemoteActions).
NARROW_EDGES = ["lockerd/maint", "lockerd/sync"]


def all_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            module = ".".join([*base, node.module] if node.module else base)
            found.add(module if node.level else node.module or "")
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("edge", NARROW_EDGES)
def test_narrow_edges_never_name_the_daemon(edge: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): _hits(all_imports(path), {"lockerd.app"})
        for path in sorted((ROOT / edge).rglob("*.py"))
    }
    assert {f: bad for f, bad in offenders.items() if bad} == {}


# The kiosk's handler modules reach the server through lockerd/kiosk/handler_api.py's
# protocols (public methods, each with its docstring), never through its internals: a
# private name of KioskServer used anywhere but on ``self`` inside server.py fails here.
KIOSK_SERVER = ROOT / "lockerd/kiosk/server.py"


def kiosk_server_private_names() -> set[str]:
    tree = ast.parse(KIOSK_SERVER.read_text(encoding="utf-8"))
    server = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "KioskServer")
    names = {
        n.name
        for n in server.body
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name.startswith("_")
    }
    for node in ast.walk(server):  # and the attributes it keeps: self._x = ...
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "self"
            and node.attr.startswith("_")
        ):
            names.add(node.attr)
    return {n for n in names if not n.startswith("__")}


def private_uses(path: Path, names: set[str]) -> list[str]:
    """``x._name`` for a name of ``names`` on anything but ``self``, with its line."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        f"{node.lineno}: .{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr in names
        and not (isinstance(node.value, ast.Name) and node.value.id == "self")
    ]


def test_no_module_but_the_kiosk_server_touches_its_private_names() -> None:
    names = kiosk_server_private_names()
    assert {"_reap", "_pending", "_door_closed"} <= names  # the check sees the class
    offenders = {
        str(path.relative_to(ROOT)): private_uses(path, names)
        for path in sorted((ROOT / "lockerd").rglob("*.py"))
        if path != KIOSK_SERVER
    }
    assert {f: bad for f, bad in offenders.items() if bad} == {}
