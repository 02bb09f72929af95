"""The client's IP: the socket peer, or X-Forwarded-For only behind a trusted proxy."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(cidrs: Sequence[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


@lru_cache(maxsize=4096)
def _parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = value.strip()
    # Some proxies append the port: "198.51.100.7:443", "[2001:db8::1]:443". Dropping
    # it matters: an unparsable entry would fall back to the proxy's own address and
    # put every client behind it into one bucket.
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@lru_cache(maxsize=4096)
def _canonical(value: str) -> str | None:
    """The address in its canonical text form (cached: every request resolves one)."""
    ip = _parse_ip(value)
    return str(ip) if ip is not None else None


def _is_trusted(ip: str, trusted: tuple[IPNetwork, ...]) -> bool:
    parsed = _parse_ip(ip)
    return parsed is not None and any(parsed in net for net in trusted)


def client_ip(
    peer: str | None,
    forwarded_for: str | None,
    trusted: tuple[IPNetwork, ...],
    hops: int = 1,
) -> str:
    """Resolve the client address.

    X-Forwarded-For is believed only when the socket peer is a trusted proxy, and then
    only `hops` entries from the right: each trusted proxy appends the address it saw,
    so anything further left was written by the client and may be forged.
    """
    peer_text = (_canonical(peer) or peer) if peer else "unknown"
    if not forwarded_for or not trusted or not _is_trusted(peer_text, trusted):
        return peer_text
    chain = [part.strip() for part in forwarded_for.split(",") if part.strip()]
    if len(chain) < hops:
        return peer_text
    return _canonical(chain[-hops]) or peer_text


def forwarded_scheme(
    peer: str | None, forwarded_proto: str | None, trusted: tuple[IPNetwork, ...], hops: int = 1
) -> str | None:
    """The scheme the client used ("http" or "https") from X-Forwarded-Proto, believed
    only from a trusted proxy as X-Forwarded-For is; None to keep the socket's.

    A TLS-terminating balancer talks plain HTTP to us: without this, the request's
    origin (CSRF checks when HEALTHFORMS_PUBLIC_URL is unset), its links and its
    cookies' Secure flag would say http. A list (proxies appending) is read like
    X-Forwarded-For: `hops` from the right, else its only entry.
    """
    if not forwarded_proto or not trusted or not peer or not _is_trusted(peer, trusted):
        return None
    chain = [part.strip().lower() for part in forwarded_proto.split(",") if part.strip()]
    if not chain:
        return None
    scheme = chain[-hops] if len(chain) >= hops else chain[0]
    return scheme if scheme in ("http", "https") else None


def rate_identifier(ip: str) -> str:
    """The bucket identity of an address: IPv6 clients share their /64."""
    parsed = _parse_ip(ip)
    if isinstance(parsed, ipaddress.IPv6Address):
        net = ipaddress.IPv6Network((int(parsed) >> 64 << 64, 64))
        return str(net)
    return str(parsed) if parsed is not None else ip
