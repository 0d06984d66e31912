"""Broker endpoints: parsing ``HOST[:PORT]`` text, and the addresses a round of attempts tries.

A fleet's broker is a cluster: several nodes, each name possibly resolving to several
addresses. A cabinet tries every address in turn before it waits (the backoff), so a dead
node costs one attempt, not a whole outage. Pure apart from :func:`resolve`, which asks
the loop's resolver (never a blocking lookup on the loop).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from dataclasses import dataclass

_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"{_LABEL}(\.{_LABEL})*\.?")
_PORT = re.compile(r"[0-9]{1,5}")
MAX_ENDPOINT_TEXT = 300


class EndpointError(ValueError):
    """The text is not ``[mqtt[s]://]HOST[:PORT]``."""


@dataclass(frozen=True)
class Endpoint:
    """One broker node as configured: a name (or an address) and a port."""

    host: str
    port: int
    # "mqtts" or "mqtt" when the text said so, else None (the [mqtt] TLS keys decide).
    scheme: str | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class Target:
    """One address to try: ``name`` is kept for TLS (SNI and the certificate check)."""

    name: str
    address: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return (
            f"{self.name}={host}:{self.port}"
            if self.name != self.address
            else f"{host}:{self.port}"
        )


def parse_endpoint(text: str, default_port: int) -> Endpoint:
    """Parse ``[mqtt://|mqtts://]HOST[:PORT]``; IPv6 addresses go in brackets."""
    if not isinstance(text, str) or not text or len(text) > MAX_ENDPOINT_TEXT:
        raise EndpointError("must be HOST or HOST:PORT")
    rest = text
    scheme: str | None = None
    for prefix in ("mqtts://", "mqtt://"):
        if rest.startswith(prefix):
            scheme = prefix[:-3]
            rest = rest[len(prefix) :]
            break
    port_text: str | None = None
    if rest.startswith("["):
        host, bracket, after = rest[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise EndpointError(f"{text!r}: an IPv6 address goes in brackets: [::1]:8883")
        port_text = after[1:] if after else None
        try:
            if ipaddress.ip_address(host).version != 6:
                raise EndpointError(f"{text!r}: only IPv6 addresses go in brackets")
        except ValueError:
            raise EndpointError(f"{text!r}: {host!r} is not an IPv6 address") from None
    else:
        if rest.count(":") > 1:
            raise EndpointError(f"{text!r}: an IPv6 address goes in brackets: [::1]:8883")
        host, colon, after = rest.partition(":")
        port_text = after if colon else None
        if not _HOSTNAME.fullmatch(host) or len(host) > 253:
            raise EndpointError(f"{text!r}: {host!r} is not a host name or address")
    if port_text is None:
        port = default_port
    else:
        if not _PORT.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
            raise EndpointError(f"{text!r}: the port must be 1..65535")
        port = int(port_text)
    if port_text is None and scheme is not None:
        port = 8883 if scheme == "mqtts" else 1883
    return Endpoint(host, port, scheme)


def rotate(targets: list[Target], after: Target | None) -> list[Target]:
    """``targets`` starting with the one after ``after``: a node just lost is tried last."""
    if after is None or after not in targets:
        return list(targets)
    index = targets.index(after) + 1
    return targets[index:] + targets[:index]


async def resolve(endpoints: tuple[Endpoint, ...]) -> tuple[list[Target], list[str]]:
    """Every address of every endpoint, in order, without repeats; plus one problem per name."""
    loop = asyncio.get_running_loop()
    targets: list[Target] = []
    problems: list[str] = []
    for endpoint in endpoints:
        try:
            ipaddress.ip_address(endpoint.host)
            found = [endpoint.host]
        except ValueError:
            try:
                infos = await loop.getaddrinfo(
                    endpoint.host, endpoint.port, type=socket.SOCK_STREAM
                )
            except (OSError, UnicodeError) as exc:
                problems.append(f"{endpoint.host}: {getattr(exc, 'strerror', None) or exc}")
                continue
            found = [str(info[4][0]) for info in infos]
        for address in found:
            target = Target(endpoint.host, address, endpoint.port)
            if target not in targets:
                targets.append(target)
    return targets, problems
