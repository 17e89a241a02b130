"""Who is asking: the client's address, and how often it has given a wrong code.

The portal sits behind a reverse proxy, so every connection comes from the proxy and the
patient's address travels in X-Forwarded-For. Clients can write that header too, so it is
believed only when the connection comes from a trusted proxy, and read from the right,
skipping the trusted proxies' own hops: the first untrusted address is the client.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterable
from typing import TypeAlias

from gateway.throttle import RecentFailures

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_TRUSTED_PROXIES = ("127.0.0.1", "::1")


def parse_address(text: str) -> IPAddress | None:
    """An address as proxies write it: bare, or bracketed IPv6; IPv4-mapped IPv6 unwrapped."""
    text = text.strip()
    if text.startswith("[") and "]" in text:
        text = text[1:text.index("]")]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class ClientAddresses:
    """``trusted`` holds addresses or networks ("127.0.0.1", "10.0.0.0/8", "::1")."""

    def __init__(self, trusted: Iterable[str] = DEFAULT_TRUSTED_PROXIES) -> None:
        self.trusted: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(entry.strip(), strict=False) for entry in trusted
        )

    def is_trusted(self, address: IPAddress | None) -> bool:
        return address is not None and any(address in network for network in self.trusted)

    def client(self, peer: str | None, forwarded_for: Iterable[str]) -> str:
        """The client's address, given the connection's peer and the X-Forwarded-For
        header values in the order received."""
        peer_address = parse_address(peer or "")
        if peer_address is None:
            return peer or "unknown"
        if not self.is_trusted(peer_address):
            return str(peer_address)
        hops = [hop for value in forwarded_for for hop in value.split(",") if hop.strip()]
        for hop in reversed(hops):
            address = parse_address(hop)
            if address is None:
                break  # a hop nobody trusted wrote: stop believing the header here
            if not self.is_trusted(address):
                return str(address)
        return str(peer_address)


class CodeThrottle:
    """Wrong access codes per client address, across all links: after ``limit`` of them
    within ``window`` seconds, further tries are refused until the oldest ages out.

    The per-link limit (locked after 5) stops guessing one link's code; this stops one
    client from spreading guesses over many links. Memory is bounded by ``max_clients``."""

    def __init__(
        self,
        limit: int = 10,
        window: float = 900.0,
        *,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._failures = RecentFailures(window, keep=limit, max_clients=max_clients,
                                        clock=clock)

    def retry_after(self, client: str) -> float:
        """Seconds this client must wait before trying a code again; 0 when it may."""
        oldest = self._failures.oldest(client)
        if oldest is None or self._failures.count(client) < self.limit:
            return 0.0
        return max(0.0, oldest + self.window - self.clock())

    def failed(self, client: str) -> None:
        self._failures.add(client)
