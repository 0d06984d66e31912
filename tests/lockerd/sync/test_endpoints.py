"""Broker endpoints: the text a technician writes, and the addresses a round tries."""

from __future__ import annotations

import socket
import textwrap
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lockerd.config import ConfigError, parse
from lockerd.sync.endpoints import Endpoint, EndpointError, Target, parse_endpoint, resolve, rotate


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mqtt.example.net", Endpoint("mqtt.example.net", 8883)),
        ("mqtt.example.net:1884", Endpoint("mqtt.example.net", 1884)),
        ("10.0.0.7:8883", Endpoint("10.0.0.7", 8883)),
        ("[fd00::7]:8884", Endpoint("fd00::7", 8884)),
        ("[::1]", Endpoint("::1", 8883)),
        ("mqtts://node-b.example.net", Endpoint("node-b.example.net", 8883, "mqtts")),
        ("mqtts://node-b:9883", Endpoint("node-b", 9883, "mqtts")),
        ("mqtt://localhost", Endpoint("localhost", 1883, "mqtt")),
    ],
)
def test_endpoints_parse(text: str, expected: Endpoint) -> None:
    assert parse_endpoint(text, 8883) == expected


@pytest.mark.parametrize(
    "text",
    ["", "host:", "host:0", "host:65536", "host:12a", "fd00::7", "[10.0.0.1]:1", "[fd00::7",
     "-bad.example", "a..b", "http://x", "host name", "mqtts://", "x" * 400, "[::1]x"],
)  # fmt: skip
def test_bad_endpoints_are_refused_with_a_reason(text: str) -> None:
    with pytest.raises(EndpointError):
        parse_endpoint(text, 8883)


@given(st.text(max_size=80))
def test_any_text_parses_or_is_refused_never_crashes(text: str) -> None:
    try:
        endpoint = parse_endpoint(text, 8883)
    except EndpointError:
        return
    assert 1 <= endpoint.port <= 65535
    assert endpoint.host and len(endpoint.host) <= 253


@given(st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9](\.[a-z]{2,6})?", fullmatch=True),
       st.integers(1, 65535))  # fmt: skip
def test_host_and_port_round_trip(host: str, port: int) -> None:
    endpoint = parse_endpoint(f"{host}:{port}", 8883)
    assert endpoint == Endpoint(host, port)
    assert parse_endpoint(str(endpoint), 1) == endpoint


def test_a_round_starts_after_the_node_just_lost() -> None:
    a, b, c = (Target("n", f"10.0.0.{i}", 8883) for i in (1, 2, 3))
    assert rotate([a, b, c], None) == [a, b, c]
    assert rotate([a, b, c], a) == [b, c, a]
    assert rotate([a, b, c], c) == [a, b, c]
    assert rotate([a, b, c], Target("n", "10.9.9.9", 1)) == [a, b, c]


async def test_every_address_a_name_resolves_to_is_tried() -> None:
    expected = []
    for info in socket.getaddrinfo("localhost", 1883, type=socket.SOCK_STREAM):
        if str(info[4][0]) not in expected:
            expected.append(str(info[4][0]))
    targets, problems = await resolve(
        (Endpoint("localhost", 1883), Endpoint("127.0.0.1", 1884), Endpoint("no-such.invalid", 1))
    )
    assert [t.address for t in targets if t.port == 1883] == expected
    assert all(t.name == "localhost" for t in targets if t.port == 1883)
    assert Target("127.0.0.1", "127.0.0.1", 1884) in targets
    assert len(problems) == 1 and problems[0].startswith("no-such.invalid")


BASE = """
[cabinet]
id = "CAB-1"
state_dir = "state"
[[buses]]
name = "eth"
family = "modbus-tcp"
host = "127.0.0.1"
  [[buses.boards]]
  name = "b1"
  address = 1
  relays = 4
  inputs = 4
[[compartments]]
id = "A01"
size = "S"
lock = { board = "b1", channel = 0 }
door = { board = "b1", input = 0 }
[mqtt]
issuer = "cloud"
trusted_keys = "keys"
"""


def _mqtt(extra: str) -> object:
    return parse(tomllib.loads(BASE + textwrap.dedent(extra)), Path("/etc/lockerd/config.toml"))


def test_brokers_list_a_cluster_and_host_still_works() -> None:
    config = _mqtt('brokers = ["mqtts://a.example:8883", "b.example"]\ntls_ca = "ca.pem"\n')
    assert config.mqtt.endpoints == (  # type: ignore[attr-defined]
        Endpoint("a.example", 8883, "mqtts"),
        Endpoint("b.example", 8883),
    )
    single = _mqtt('host = "127.0.0.1"\nport = 1884\n')
    assert single.mqtt.endpoints == (Endpoint("127.0.0.1", 1884),)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ('brokers = ["a.example"]\nhost = "b"\n', "either brokers or host/port"),
        ('brokers = ["a.example"]\n', "'a.example' needs TLS"),
        ("brokers = []\n", "lists no broker"),
        ('brokers = ["127.0.0.1", "127.0.0.1:1883"]\n', "listed twice"),
        ('brokers = ["mqtts://127.0.0.1"]\n', "needs tls_ca"),
        ('brokers = ["mqtt://a.example"]\ntls_ca = "ca.pem"\n', "use mqtts://"),
        ('brokers = ["127.0.0.1:70000"]\n', "brokers[0]"),
        ("brokers = [1883]\n", "must be a string"),
        ("", "mqtt.host: missing"),
        ('host = "127.0.0.1"\nrenew_before_days = 0\n', "renew_before_days"),
    ],
)
def test_check_config_names_the_broker_problem(extra: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _mqtt(extra)
    assert any(problem in p and "/etc/lockerd/config.toml" in p for p in caught.value.problems), (
        caught.value.problems
    )


def test_check_config_names_the_nodes(tmp_path: Path) -> None:
    from lockerd.config import load, summary

    path = tmp_path / "config.toml"
    path.write_text(
        BASE + 'brokers = ["mqtts://a.example:8883", "b.example:9883"]\ntls_ca = "ca.pem"\n'
    )
    assert "  cloud: a.example:8883, b.example:9883 (TLS)" in summary(load(path)).splitlines()
