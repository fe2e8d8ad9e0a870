"""Where a client connects from: its address behind trusted proxies, and the connections per address."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from .settings import Network

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _parse(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    # An IPv4 peer on a dual-stack socket comes as ::ffff:a.b.c.d: compared as the IPv4 it is.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: Address, proxies: Sequence[Network]) -> bool:
    return any(address in network for network in proxies)


def client_address(peer: str | None, forwarded_for: Iterable[str], proxies: Sequence[Network]) -> str | None:
    """The client's address: `peer` (the socket's), unless `peer` is a trusted proxy; then the
    right-most entry of X-Forwarded-For (`forwarded_for`: the header's values, in order) that is
    not a trusted proxy itself.

    Right to left, because each proxy appends the address it was connected from: the entries left
    of the last trusted proxy's are whatever the client wrote, and could name anyone. An entry that
    is not an address ends the walk at the last trusted hop (a proxy, not the unknown client); a
    header of trusted proxies only gives its left-most one. Bounded by the header's size.
    """
    if peer is None or not proxies:
        return peer
    hop = _parse(peer)
    if hop is None or not _trusted(hop, proxies):
        return peer
    entries = [entry for value in forwarded_for for entry in value.split(",")]
    for entry in reversed(entries):
        address = _parse(entry)
        if address is None:
            break
        hop = address
        if not _trusted(address, proxies):
            break
    return str(hop)


class ConnectionsPerAddress:
    """Open connections by client address, at most `limit` each (0: no limit, and nothing counted).

    O(1) a connection; an address is counted while it has connections, so the map holds at most
    one entry per open connection.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._counts: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._counts)

    def count(self, address: str | None) -> int:
        return self._counts.get(address or "", 0)

    def acquire(self, address: str | None) -> bool:
        """Count one more connection from `address`; False, counting nothing, if it has `limit` already."""
        if not self.limit:
            return True
        key = address or ""
        held = self._counts.get(key, 0)
        if held >= self.limit:
            return False
        self._counts[key] = held + 1
        return True

    def release(self, address: str | None) -> None:
        """One connection from `address` (acquired before) closed."""
        if not self.limit:
            return
        key = address or ""
        held = self._counts.get(key, 0)
        if held <= 1:
            self._counts.pop(key, None)
        else:
            self._counts[key] = held - 1
