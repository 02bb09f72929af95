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


def rate_identifier(ip: str) -> str:
    """The bucket identity of an address: IPv6 clients share their /64."""
    parsed = _parse_ip(ip)
    if isinstance(parsed, ipaddress.IPv6Address):
        net = ipaddress.IPv6Network((int(parsed) >> 64 << 64, 64))
        return str(net)
    return str(parsed) if parsed is not None else ip
