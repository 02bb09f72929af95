"""Where a webhook may go (SSRF). In production an endpoint's URL must be https, and
every address its host resolves to must be a public unicast one: not loopback,
link-local (cloud metadata at 169.254.169.254), private (RFC 1918, ULA), shared
(CGNAT 100.64/10), unspecified, multicast, reserved, nor one of this service's own.
The check runs when the URL is registered and again before every call, on the
addresses the call then connects to (the connection is pinned to the checked
address, so a DNS answer that changes in between cannot move it). Hosts named in
HEALTHFORMS_WEBHOOK_ALLOW_HOSTS skip the address check (still https). Outside
production anything goes: tests and laptops post to http://127.0.0.1.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL = 2048
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # CGNAT: not is_private in every Python
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UnsafeUrl(ValueError):
    """The URL may not be called (the message says why, for the admin)."""


@dataclass(frozen=True, slots=True)
class Target:
    url: str
    scheme: str
    host: str  # lower case, IPv6 without brackets
    port: int
    path: str  # path and query, at least "/"


def parse_url(url: object, *, production: bool) -> Target:
    """Shape only (no DNS): an absolute http(s) URL without credentials or fragment;
    https in production."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise UnsafeUrl(f"give an absolute https URL of at most {MAX_URL} characters")
    if any(ord(c) <= 32 or ord(c) == 127 for c in url):
        raise UnsafeUrl("the URL has spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeUrl("the URL does not parse") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeUrl("the URL must start with https://")
    if production and scheme != "https":
        raise UnsafeUrl("webhooks go to https URLs only")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise UnsafeUrl("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("the URL may not carry a user name or password")
    if parts.fragment:
        raise UnsafeUrl("the URL may not have a #fragment")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(url, scheme, host, port or (443 if scheme == "https" else 80), path)


def refused_reason(address: IPAddress, own: frozenset[IPAddress] = frozenset()) -> str | None:
    """Why a call to this address is refused in production, or None."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return refused_reason(mapped, own)
        if address in _NAT64:
            return refused_reason(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), own)
    if address in own:
        return "one of this service's own addresses"
    for test, reason in (
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_unspecified, "an unspecified address"),
        (address.is_multicast, "a multicast address"),
        (
            isinstance(address, ipaddress.IPv4Address) and address in _SHARED,
            "a shared (CGNAT) address",
        ),
        (address.is_private, "a private address"),
        (address.is_reserved, "a reserved address"),
        (not address.is_global, "not a public address"),
    ):
        if test:
            return reason
    return None


def literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


async def resolve(host: str, port: int) -> list[IPAddress]:
    literal = literal_address(host)
    if literal is not None:
        return [literal]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeUrl(f"the host does not resolve ({type(exc).__name__})") from None
    found: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    if not found:
        raise UnsafeUrl("the host does not resolve")
    return found


@dataclass(frozen=True, slots=True)
class Policy:
    production: bool
    allow_hosts: frozenset[str] = frozenset()
    own: frozenset[IPAddress] = frozenset()

    async def check(self, target: Target) -> list[IPAddress]:
        """The addresses to connect to (in order), once every one the host resolves to
        passed (UnsafeUrl otherwise)."""
        addresses = await resolve(target.host, target.port)
        if self.production and target.host not in self.allow_hosts:
            for address in addresses:
                reason = refused_reason(address, self.own)
                if reason is not None:
                    raise UnsafeUrl(f"the host resolves to {reason}")
        return addresses


def own_addresses(public_url: str | None) -> frozenset[IPAddress]:
    """This machine's addresses and the public URL's (so a webhook cannot call us)."""
    found: set[IPAddress] = set()
    names = [socket.gethostname(), socket.getfqdn()]
    if public_url:
        host = urlsplit(public_url).hostname
        if host:
            names.append(host)
    for name in names:
        literal = literal_address(name)
        if literal is not None:
            found.add(literal)
            continue
        try:
            for info in socket.getaddrinfo(name, None, type=socket.SOCK_STREAM):
                found.add(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]))
        except (OSError, UnicodeError):
            continue
    return frozenset(found)
