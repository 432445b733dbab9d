"""Which network targets a URL chosen by a requester may reach: the public internet, not the worker's networks.

Dataset URIs, input files and the result proxy named in a deal's params are chosen by strangers. Fetched
blindly they reach what only the worker can reach: cloud metadata (169.254.169.254), the LAN, services on
the host's loopback, the Docker bridge (server-side request forgery). A :class:`TargetPolicy` refuses
every address that is not globally routable (loopback, private, shared 100.64/10, link-local, multicast,
reserved, unspecified; IPv4-mapped IPv6 judged as IPv4) unless the operator allowlisted its network, or the
exact ``host:port`` is one the operator chose (an IPFS gateway, the scheduler's result repository).

The check applies to the addresses a name resolves to, every one of them, and to every redirect hop; the
adapters do the resolution (``resolve`` is injected) and keep the connection on the checked addresses.
Sans I/O itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolve = Callable[[str, int], Awaitable[list[str]]]
"""(host, port) -> the addresses the name resolves to, as text."""


class TargetRefused(ValueError):
    """A URL leads to an address the worker does not fetch for a stranger."""


def parse_networks(items: Iterable[str]) -> tuple[IPNetwork, ...]:
    """CIDRs or single addresses (``10.0.0.0/8``, ``127.0.0.1``); ValueError names the bad one."""
    networks = []
    for item in items:
        text = item.strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a network (CIDR like 10.0.0.0/8) nor an address") from exc
    return tuple(networks)


def _plain(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def kind_of(address: IPAddress) -> str | None:
    """Why ``address`` is not a public internet address, or None when it is one."""
    address = _plain(address)
    for test, kind in (
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local"),
        (address.is_multicast, "multicast"),
        (address.is_unspecified, "unspecified"),
        (address.is_private, "private"),
        (address.is_reserved, "reserved"),
    ):
        if test:
            return kind
    return None if address.is_global else "non-public"


def url_port(url: URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


@dataclass(frozen=True)
class TargetPolicy:
    """What a requester's URL may reach. The default refuses every non-public address."""

    allowed: tuple[IPNetwork, ...] = ()
    """Operator allowlist (IEXEC_WORKER_NETWORK_ALLOWLIST): networks reachable though not public."""
    trusted: frozenset[tuple[str, int]] = field(default_factory=frozenset)
    """``(host, port)`` the operator (or its scheduler) chose: reachable wherever they are."""

    @classmethod
    def allowing(cls, *networks: str, trusted_urls: Iterable[str] = ()) -> TargetPolicy:
        return cls(allowed=parse_networks(networks)).trusting(trusted_urls)

    def trusting(self, urls: Iterable[str]) -> TargetPolicy:
        """This policy, also trusting the ``host:port`` of each URL (operator-chosen endpoints)."""
        pairs = set(self.trusted)
        for text in urls:
            try:
                url = URL(text)
            except (ValueError, TypeError):
                continue
            if url.host:
                pairs.add((url.host.lower(), url_port(url)))
        return TargetPolicy(allowed=self.allowed, trusted=frozenset(pairs))

    def is_trusted(self, host: str, port: int) -> bool:
        return (host.lower().rstrip("."), port) in self.trusted

    def refusal(self, address: str | IPAddress) -> str | None:
        """Why ``address`` may not be reached, or None when it may."""
        try:
            parsed = _plain(ipaddress.ip_address(address) if isinstance(address, str) else address)
        except ValueError:
            return f"{address!r} is not an IP address"
        kind = kind_of(parsed)
        if kind is None or any(parsed in network for network in self.allowed):
            return None
        return (
            f"{kind} address {parsed} is not fetched for a requester; an operator who means it adds its "
            "network to IEXEC_WORKER_NETWORK_ALLOWLIST"
        )

    async def check(self, url: URL, resolve: Resolve) -> None:
        """Raise ``TargetRefused`` unless every address ``url`` leads to may be reached."""
        host = (url.host or "").lower().rstrip(".")
        if not host:
            raise TargetRefused("the URL has no host")
        port = url_port(url)
        if self.is_trusted(host, port):
            return
        try:
            addresses = [str(ipaddress.ip_address(host.strip("[]")))]
        except ValueError:
            try:
                addresses = await resolve(host, port)
            except OSError as exc:
                raise TargetRefused(f"{host} cannot be resolved ({exc.strerror or exc})") from exc
        if not addresses:
            raise TargetRefused(f"{host} resolves to no address")
        for address in addresses:
            reason = self.refusal(address)
            if reason is not None:
                shown = reason if address == host else f"{host} resolves to a {reason}"
                raise TargetRefused(shown)
