"""The maintenance socket inside the daemon: technicians' commands over a Unix socket.

Only root, the daemon's own user, members of the configured group and the listed
uids/gids get in: the socket file is mode 0660 with that group, and every peer's
credentials are checked again with ``SO_PEERCRED`` (a socket file's mode is easy to
loosen by mistake). Nothing a technician sends can crash the daemon: each request
gets an answer, a refusal or an error line.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import sqlite3
import stat
import unicodedata
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drivers.base import BoardError

from .. import __version__, status
from ..cabinet import CompartmentView, UnlockResult
from ..config import Level
from ..events import StoredEvent, rfc3339_ms
from ..logs import fact
from ..model import Actor, CompartmentState, DoorState, Occupancy
from ..store.full_check import VerifyError
from . import metrics
from .cabinet import MaintainedCabinet, cloud_figures, store_health
from .database import backup
from .gate import Gate, peer_of
from .handover import handover_open
from .hangup import HungUp, unless_hung_up
from .protocol import MAX_LINE, ProtocolError, Refused, decode, encode
from .socket_file import in_use, restrict

if TYPE_CHECKING:
    from ..reservations import Reservation
    from ..store import Store

log = logging.getLogger("lockerd.maint")

MAX_REASON = 200
EVENTS_PAGE = 500
FOLLOW_POLL_S = 0.2
CLIENTS_END_S = 5.0  # how long a stop waits for technicians' requests to end


Handler = Callable[[dict[str, Any], asyncio.StreamWriter], Awaitable[Any]]


class MaintenanceServer:
    """Serves lockerctl for one running daemon (any :class:`MaintainedCabinet`)."""

    def __init__(self, daemon: MaintainedCabinet) -> None:
        self.daemon = daemon
        self.config = daemon.config.maintenance
        self.gate = Gate(self.config)
        self.counter = metrics.EventCounter(0)  # from the store's last seq once serving
        # Each connected technician's task: ended with the server, so a long request
        # (db verify's child process, events --follow) never outlives the daemon's stop.
        self._clients: set[asyncio.Task[Any]] = set()
        self._handlers: dict[str, Handler] = {
            "status": self._status,
            "doors": self._doors,
            "open": self._open,
            "service": self._service,
            "selftest": self._selftest,
            "events": self._events,
            "outbox": self._outbox,
            "reservations": self._reservations,
            "db.backup": self._db_backup,
            "db.verify": self._db_verify,
            "metrics": self._metrics,
            "throttle.reset": self._throttle_reset,
        }

    # ------------------------------------------------------------ serving

    async def serve(self) -> None:
        """Listen until cancelled. A socket that cannot be made raises OSError: the
        supervisor says so in one line and tries again later, while the cabinet goes on
        serving people without its technician socket."""
        path = self.config.socket
        path.parent.mkdir(parents=True, exist_ok=True)
        if in_use(path):
            # Another lockerd answers there: never steal its socket.
            raise OSError(errno.EADDRINUSE, f"another lockerd answers on {path}")
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()  # left by a daemon that did not stop cleanly
        # Read before the socket exists: a stop that lands while the store answers
        # leaves no socket file behind.
        last_seq = await self.daemon.async_store.read(lambda s: s.last_seq())
        self.counter = metrics.EventCounter(last_seq)
        unsubscribe = self.daemon.async_store.subscribe(self.counter.add)
        server: asyncio.Server | None = None
        metrics_server: asyncio.Server | None = None
        bound = False  # the socket file is ours to remove
        try:
            try:
                server = await asyncio.start_unix_server(
                    self._client, path=str(path), limit=MAX_LINE
                )
            except asyncio.CancelledError:
                bound = True  # a stop may land after the bind, before the server is back
                raise
            bound = True
            restrict(path, self.config.group)
            if self.config.metrics and self.config.metrics_port:
                metrics_server = await asyncio.start_server(
                    self._http_metrics, "127.0.0.1", self.config.metrics_port
                )
            fact(log, "maint.listening", socket=path)
            async with server:
                await server.serve_forever()
        finally:
            unsubscribe()
            if server is not None:
                server.close()
            await self._end_clients()
            if metrics_server is not None:
                metrics_server.close()
            with contextlib.suppress(FileNotFoundError):
                if bound:
                    path.unlink()

    async def _end_clients(self) -> None:
        clients = list(self._clients)
        for task in clients:
            task.cancel()
        if clients:
            # each ends at its next await; the bound only guards the daemon's stop
            await asyncio.wait(clients, timeout=CLIENTS_END_S)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            sock = writer.get_extra_info("socket")
            peer = peer_of(sock)
            if not self.gate.allows(peer):
                fact(log, "maint.refused", logging.WARNING, uid=peer.uid, gid=peer.gid)
                # Read (and ignore) the first request so the client, still sending, is
                # not cut off with a broken pipe before it can see why.
                with contextlib.suppress(TimeoutError, ValueError, asyncio.LimitOverrunError):
                    await asyncio.wait_for(reader.readline(), 5.0)
                writer.write(
                    encode(
                        {
                            "ok": False,
                            "error": "not allowed: join the "
                            f"{self.config.group} group or run as root",
                        }
                    )
                )
                await writer.drain()
                return
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    writer.write(encode({"ok": False, "error": "request too long"}))
                    await writer.drain()
                    return
                if not line:
                    return
                writer.write(encode(await self._answer(line, writer)))
                await writer.drain()
        except (ConnectionError, BrokenPipeError):
            pass
        except Exception:  # one technician's bad request never takes the daemon down
            log.exception("maint.client_failed")
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, line: bytes, writer: asyncio.StreamWriter) -> dict[str, Any]:
        try:
            request = decode(line)
            op = request.get("op")
            handler = self._handlers.get(op) if isinstance(op, str) else None
            if handler is None:
                raise Refused(f"unknown operation {op!r}")
            return {"ok": True, "result": await handler(request, writer)}
        except (ProtocolError, Refused) as exc:
            return {"ok": False, "error": str(exc)}
        except (ConnectionError, asyncio.CancelledError):
            raise
        except sqlite3.Error as exc:
            fact(log, "maint.store_failed", logging.ERROR, error=exc)
            where = self.daemon.config.cabinet.state_dir
            return {"ok": False, "error": f"the store cannot write ({exc}): free space in {where}"}
        except Exception as exc:
            log.exception("maint.request_failed")
            return {"ok": False, "error": f"internal error: {type(exc).__name__}"}

    async def _http_metrics(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            with contextlib.suppress(ValueError, asyncio.LimitOverrunError):
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            body = (await self.metrics_text()).encode()
            writer.write(
                b"HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    # ------------------------------------------------------------ reading

    def _view(self, cid: str) -> CompartmentView | None:
        try:
            return self.daemon.hardware.supervisor.view(cid)
        except KeyError:
            return None

    def _board_online(self) -> list[dict[str, Any]]:
        hw = self.daemon.hardware
        return [{"name": name, "online": hw.supervisor.board_online(name)} for name in hw.boards]

    async def _status(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
        d = self.daemon
        cloud = d.cloud
        rows, outbox_depth, last_seq, clock_trusted = await d.async_store.read(
            lambda s: (s.compartments(), s.outbox_depth(), s.last_seq(), s.clock_trusted())
        )
        states = Counter(c.state.value for c in rows if c.configured)
        return {
            "version": __version__,
            "cabinet": d.config.cabinet.id,
            "boot": d.boot_id,
            "uptime_s": round(d.clock.monotonic() - d.started_monotonic, 1),
            "boards": self._board_online(),
            "buses": [asdict(pace) for pace in d.hardware.paces()],
            "compartments": {s.value: states.get(s.value, 0) for s in CompartmentState},
            "outbox_depth": outbox_depth,
            "last_seq": last_seq,
            # from the cloud link while it runs; null until it has them
            "last_sync": (
                rfc3339_ms(cloud.last_acknowledged_at)
                if cloud is not None and cloud.last_acknowledged_at is not None
                else None
            ),
            "clock_skew_s": cloud.clock_skew_s if cloud is not None else None,
            "clock_trusted": clock_trusted,
            "cloud": (
                "not configured"
                if cloud is None
                else "connected"
                if cloud.connected.is_set()
                else "disconnected"
            ),
            # The broker node in use, the cmd subscription, and the client certificate.
            "link": None if cloud is None else cloud.link.summary(),
            "scans": d.hardware.scans,
            # "ok", or why the store runs on its disk reserve or cannot write at all
            "store": store_health(d),
        }

    async def _doors(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
        d = self.daemon
        return [
            {
                "id": c.id,
                "size": c.size.value,
                "column": c.column,
                "row": c.row,
                "state": c.state.value,
                "door": c.door.value,
                "lock": c.lock.value,
                "occupancy": None if c.occupancy is None else c.occupancy.value,
                "fault": list(c.faults),
                # the reservation's id only: never its code or anything derived from it
                "reservation": c.reservation_id,
            }
            for c in status.compartments(
                d.config,
                await d.async_store.read(lambda s: s.compartments()),
                d.hardware.supervisor,
            )
        ]

    def _compartment(self, request: dict[str, Any]) -> str:
        cid = request.get("id")
        if not isinstance(cid, str) or cid not in self.daemon.hardware.supervisor.compartment_ids:
            raise Refused(f"no compartment {cid!r}")
        return cid

    @staticmethod
    def _reason(request: dict[str, Any]) -> str:
        reason = request.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise Refused("a reason is required (--reason TEXT)")
        reason = " ".join(reason.split())
        if any(unicodedata.category(c) in ("Cc", "Cf") for c in reason):
            # ESC sequences recolour a terminal, U+202E reverses the text around it: in a
            # log or an event a reason is read by people who must be able to trust it.
            raise Refused("the reason may not contain control or formatting characters")
        if len(reason) > MAX_REASON:
            raise Refused(f"the reason is longer than {MAX_REASON} characters")
        return reason

    # ------------------------------------------------------------ acting

    async def _open(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
        cid = self._compartment(request)
        reason = self._reason(request)
        fact(log, "technician.open", compartment=cid, reason=reason)
        if request.get("reservation") is not None:
            return await handover_open(self.daemon.flows, cid, reason, request["reservation"])
        # The unlock intent (committed before the pulse) keeps actor and reason; the
        # door.opened event that follows says by=technician.
        outcome = await self.daemon.hardware.unlock(cid, Actor.TECHNICIAN, reason)
        if outcome.result is not UnlockResult.OPENED:
            raise Refused(f"{cid} did not open: {outcome.result.value}")
        return {"compartment": cid, "result": outcome.result.value}

    async def _service(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
        cid = self._compartment(request)
        reason = self._reason(request)
        in_service = request.get("in_service")
        if not isinstance(in_service, bool):
            raise Refused("in_service must be true or false")
        applied = await self.daemon.async_store.write(
            lambda tx: tx.set_service(cid, in_service, reason, Actor.TECHNICIAN.value)
        )
        if applied.status.value != "applied":
            raise Refused(applied.reason or applied.status.value)
        fact(log, "technician.service", compartment=cid, in_service=in_service, reason=reason)
        return {"compartment": cid, "in_service": in_service}

    async def _throttle_reset(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
        """Give every surface and the cabinet's guessing budget a fresh start (after an
        attack was dealt with): the only thing besides time that does."""
        reason = self._reason(request)
        rows = await self.daemon.async_store.write(lambda tx: tx.reset_throttles())
        fact(log, "technician.throttle_reset", logging.WARNING, rows=rows, reason=reason)
        return {"reset": rows}

    async def _selftest(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
        hw = self.daemon.hardware
        readings: dict[str, list[bool]] = {}
        silent = []
        for name, board in hw.boards.items():
            try:
                readings[name] = list(await board.read_inputs())
            except BoardError as exc:
                silent.append({"board": name, "error": str(exc)})
        stored = {c.id: c for c in await self.daemon.async_store.read(lambda s: s.compartments())}
        disagree = []
        for cc in self.daemon.config.compartments:
            bits = readings.get(cc.door.board)
            view = self._view(cc.id)
            if bits is not None and view is not None:
                door_open = _active(bits, cc.door.input, cc.door.active)
                if (
                    door_open is not None
                    and view.door is not DoorState.UNKNOWN
                    and (door_open != (view.door is DoorState.OPEN))
                ):
                    disagree.append(
                        {
                            "compartment": cc.id,
                            "sensor": "door",
                            "read": "open" if door_open else "closed",
                            "supervisor": view.door.value,
                        }
                    )
            comp = stored.get(cc.id)
            if cc.occupancy is None or comp is None:
                continue
            obits = readings.get(cc.occupancy.board)
            present = (
                None if obits is None else _active(obits, cc.occupancy.input, cc.occupancy.active)
            )
            if present is None:
                continue
            expected = {CompartmentState.OCCUPIED: True, CompartmentState.FREE: False}.get(
                comp.state
            )
            if expected is not None and present != expected:
                disagree.append(
                    {
                        "compartment": cc.id,
                        "sensor": "occupancy",
                        "read": Occupancy.PRESENT.value if present else Occupancy.EMPTY.value,
                        "store": comp.state.value,
                    }
                )
        pulsed = []
        if request.get("pulse") is True:
            for cc in self.daemon.config.compartments:
                comp = stored.get(cc.id)
                view = self._view(cc.id)
                if comp is None or comp.state is not CompartmentState.FREE or view is None:
                    continue
                if view.door is not DoorState.CLOSED:
                    continue
                outcome = await hw.unlock(cc.id, Actor.TECHNICIAN, "selftest")
                pulsed.append({"compartment": cc.id, "result": outcome.result.value})
        store = store_health(self.daemon)
        cloud = self.daemon.cloud
        certificate = cloud.link.certificate() if cloud is not None else None
        cert_failed = certificate is not None and certificate["failed"]
        # The faults `doors` shows (a lock that failed, a faulty sensor, a board offline),
        # read from the same place, so the two commands never disagree about a door.
        d = self.daemon
        faults = [
            {"compartment": c.id, "fault": list(c.faults)}
            for c in status.compartments(
                d.config,
                await d.async_store.read(lambda s: s.compartments()),
                d.hardware.supervisor,
            )
            if c.faults
        ]
        ok = (
            not silent
            and not disagree
            and not cert_failed
            and not faults
            and all(p["result"] == "opened" for p in pulsed)
            and store["state"] == "ok"
        )
        return {
            "ok": ok,
            "silent_boards": silent,
            "disagree": disagree,
            "faults": faults,
            "pulsed": pulsed,
            "store": store,
            "certificate": certificate,
        }

    # ------------------------------------------------------------ logs and data

    async def _events(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
        since = request.get("since", 0)
        limit = request.get("limit", 50)
        if not isinstance(since, int) or not isinstance(limit, int) or limit < 1:
            raise Refused("since and limit must be integers, limit at least 1")
        read = self.daemon.async_store.read
        if since < 0:  # the last -since events
            since = max(0, await read(lambda s: s.last_seq()) + since)
        if request.get("follow") is True:
            while True:
                batch = await read(functools.partial(_events_after, since))
                for event in batch:
                    writer.write(encode({"ok": True, "event": _event(event)}))
                    since = event.seq
                await writer.drain()
                if not batch:
                    await asyncio.sleep(FOLLOW_POLL_S)
        start, count = since, min(limit, 10_000)
        return [_event(e) for e in await read(lambda s: s.events_after(start, count))]

    async def _outbox(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
        pending, depth = await self.daemon.async_store.read(
            lambda s: (s.outbox_after(0, 20), s.outbox_depth())
        )
        return {
            "depth": depth,
            "oldest": [{"seq": e.seq, "ts": e.ts, "type": e.type} for e in pending],
        }

    async def _reservations(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
        def read_all(store: Store) -> list[tuple[str, int, str, Reservation | None]]:
            reservations, _ = store.sync_summary()
            return [(rid, v, state, store.reservation(rid)) for rid, v, state in reservations]

        rows = []
        for rid, version, state, r in await self.daemon.async_store.read(read_all):
            rows.append(
                {
                    "id": rid,
                    "version": version,
                    "state": state,
                    "kind": r.kind.value if r else None,
                    "compartment": r.compartment if r else None,
                    "reserved_until": r.reserved_until if r else None,
                    # the hold, or sooner the not-taken grace: when the code stops
                    "expires_at": r.code_opens_until if r else None,
                }
            )
        return rows

    async def _db_backup(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
        target = request.get("path")
        if not isinstance(target, str) or not os.path.isabs(target):
            raise Refused("the backup path must be absolute")
        # Off the loop: a copy of a large store takes seconds, and doors keep being polled.
        return await asyncio.to_thread(backup, self.daemon.database_path, Path(target))

    async def _db_verify(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
        # In a process of its own (AsyncStore.verify): a million events must not stall a
        # door poll. The daemon's stop, or the technician hanging up, kills that process.
        try:
            return await unless_hung_up(writer, self.daemon.async_store.verify())
        except VerifyError as exc:
            raise Refused(str(exc)) from exc
        except HungUp:
            fact(log, "maint.verify_abandoned", detail="the technician hung up; check stopped")
            raise

    async def _metrics(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
        if not self.config.metrics:
            raise Refused("metrics are switched off ([maintenance] metrics = false)")
        return await self.metrics_text()

    async def metrics_text(self) -> str:
        d = self.daemon
        hw = d.hardware
        rows, outbox_depth = await d.async_store.read(
            lambda s: (s.compartments(), s.outbox_depth())
        )
        states = Counter(c.state.value for c in rows if c.configured)
        boards = [
            metrics.BoardFigures(
                name,
                hw.supervisor.board_online(name),
                b.stats.requests,
                b.stats.timeouts,
                b.stats.bad_frames,
            )
            for name, b in hw.boards.items()
        ]
        return metrics.render(
            metrics.Snapshot(
                uptime_s=d.clock.monotonic() - d.started_monotonic,
                scans=hw.scans,
                outbox_depth=outbox_depth,
                compartments_by_state=[(s.value, states.get(s.value, 0)) for s in CompartmentState],
                boards=boards,
                events_by_type=sorted(self.counter.by_type.items()),
                **cloud_figures(d.cloud),
            )
        )


def _active(bits: list[bool], index: int, level: Level) -> bool | None:
    if index >= len(bits):
        return None
    return bits[index] if level is Level.HIGH else not bits[index]


def _events_after(seq: int, store: Store) -> list[StoredEvent]:
    return store.events_after(seq, EVENTS_PAGE)


def _event(event: StoredEvent) -> dict[str, Any]:
    return {"seq": event.seq, "ts": event.ts, "type": event.type, "data": dict(event.data)}


async def serve(daemon: MaintainedCabinet) -> None:
    """The Daemon service entry: ``daemon.services.append(("maintenance", serve))``."""
    await MaintenanceServer(daemon).serve()
