"""X-Forwarded-Proto from a trusted proxy: the scheme the client used (TLS at the balancer)."""

from __future__ import annotations

from healthforms.http.client_ip import forwarded_scheme, parse_networks

TRUSTED = parse_networks(["10.0.0.0/8", "127.0.0.1/32"])


def test_a_trusted_proxy_sets_the_scheme() -> None:
    assert forwarded_scheme("10.0.0.2", "https", TRUSTED) == "https"
    assert forwarded_scheme("127.0.0.1", "HTTP", TRUSTED) == "http"
    assert forwarded_scheme("::ffff:10.0.0.2", "https", TRUSTED) == "https"


def test_an_untrusted_peer_or_no_proxies_keeps_the_socket_scheme() -> None:
    assert forwarded_scheme("203.0.113.10", "https", TRUSTED) is None
    assert forwarded_scheme("10.0.0.2", "https", ()) is None
    assert forwarded_scheme(None, "https", TRUSTED) is None


def test_only_http_or_https_and_lists_read_by_hops() -> None:
    assert forwarded_scheme("10.0.0.2", "javascript", TRUSTED) is None
    assert forwarded_scheme("10.0.0.2", " , ", TRUSTED) is None
    # Each proxy appends what it saw: the client-facing one is `hops` from the right.
    assert forwarded_scheme("10.0.0.2", "http, https", TRUSTED) == "https"
    assert forwarded_scheme("10.0.0.2", "https, http", TRUSTED, hops=2) == "https"
    # One entry set by the outer proxy and passed on by the inner one.
    assert forwarded_scheme("10.0.0.2", "https", TRUSTED, hops=2) == "https"
