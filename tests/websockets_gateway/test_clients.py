"""The client's address behind trusted proxies, and the count of connections per address."""

from __future__ import annotations

import ipaddress

import pytest

from websockets_gateway.clients import ConnectionsPerAddress, client_address

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


@pytest.mark.parametrize(
    "peer, forwarded_for, expected",
    [
        # No proxy trusted, or a peer that is none of them: the header is anyone's, ignored.
        ("203.0.113.9", ["198.51.100.1"], "203.0.113.9"),
        # The trusted proxy says who connected to it.
        ("10.0.0.2", ["198.51.100.1"], "198.51.100.1"),
        # The client wrote an entry of its own: the right-most untrusted one is the one the proxy saw.
        ("10.0.0.2", ["1.2.3.4, 198.51.100.1"], "198.51.100.1"),
        # Through two trusted proxies (their entries skipped), with several header lines in order.
        ("10.0.0.2", ["6.6.6.6, 198.51.100.1", "10.9.9.9"], "198.51.100.1"),
        # A trusted peer that sent no header: the peer.
        ("10.0.0.2", [], "10.0.0.2"),
        # Only trusted entries: the left-most, the farthest hop known.
        ("10.0.0.2", ["10.1.1.1, 10.2.2.2"], "10.1.1.1"),
        # An entry that is no address ends the walk at the last trusted hop.
        ("10.0.0.2", ["198.51.100.1, unknown"], "10.0.0.2"),
        ("10.0.0.2", ["garbage, 10.3.3.3"], "10.3.3.3"),
        # IPv6, and an IPv4 peer as a dual-stack socket spells it.
        ("fd00::1", ["2001:db8::7"], "2001:db8::7"),
        ("::ffff:10.0.0.2", ["198.51.100.1"], "198.51.100.1"),
        (None, ["198.51.100.1"], None),
    ],
)
def test_client_address(peer, forwarded_for, expected):
    assert client_address(peer, forwarded_for, PROXIES) == expected


def test_without_trusted_proxies_the_header_is_never_read():
    assert client_address("10.0.0.2", ["198.51.100.1"], ()) == "10.0.0.2"


def test_connections_per_address_are_bounded_and_forgotten_at_zero():
    counts = ConnectionsPerAddress(2)
    assert counts.acquire("a") and counts.acquire("a")
    assert not counts.acquire("a")  # refused: nothing counted
    assert counts.count("a") == 2
    assert counts.acquire("b")
    counts.release("a")
    assert counts.acquire("a")
    for _ in range(2):
        counts.release("a")
    counts.release("b")
    assert len(counts) == 0 and counts.count("a") == 0


def test_without_a_limit_nothing_is_counted():
    counts = ConnectionsPerAddress(0)
    assert all(counts.acquire("a") for _ in range(1000))
    counts.release("a")
    assert len(counts) == 0
