"""Rate limiting without Redis: client IP rules, the local GCRA, headers, configuration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from healthforms.config import ConfigError, RateSpec, load_settings, parse_rate
from healthforms.http.client_ip import client_ip, parse_networks, rate_identifier
from healthforms.security.ratelimit import (
    LocalBuckets,
    RateDecision,
    emission_us,
    headline,
    rate_limit_headers,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
TRUSTED = parse_networks(["10.0.0.0/8", "fd00::/8"])
AUTH = RateSpec(rate=5, period_s=60.0, burst=2)


# Client IP ---------------------------------------------------------------------------------


def test_forwarded_for_from_an_untrusted_peer_is_ignored() -> None:
    assert client_ip("203.0.113.10", "198.51.100.7", TRUSTED) == "203.0.113.10"
    assert client_ip("203.0.113.10", "198.51.100.7", ()) == "203.0.113.10"


def test_trusted_proxy_takes_the_address_one_hop_from_the_right() -> None:
    # The client wrote "1.1.1.1" itself; the proxy appended what it saw.
    assert client_ip("10.0.0.2", "1.1.1.1, 198.51.100.7", TRUSTED) == "198.51.100.7"


def test_trusted_proxy_hops_count_from_the_right() -> None:
    chain = "1.1.1.1, 198.51.100.7, 10.0.0.9"
    assert client_ip("10.0.0.2", chain, TRUSTED, hops=2) == "198.51.100.7"
    assert client_ip("10.0.0.2", chain, TRUSTED, hops=3) == "1.1.1.1"


def test_short_or_garbage_forwarded_for_falls_back_to_the_peer() -> None:
    assert client_ip("10.0.0.2", "198.51.100.7", TRUSTED, hops=2) == "10.0.0.2"
    assert client_ip("10.0.0.2", "not-an-ip", TRUSTED) == "10.0.0.2"
    assert client_ip("10.0.0.2", " , ", TRUSTED) == "10.0.0.2"


def test_forwarded_entries_with_a_port_keep_the_client_address() -> None:
    assert client_ip("10.0.0.2", "1.1.1.1, 198.51.100.7:52311", TRUSTED) == "198.51.100.7"
    assert client_ip("10.0.0.2", "[2001:db8::5]:443", TRUSTED) == "2001:db8::5"
    assert client_ip("10.0.0.2", "[2001:db8::5]", TRUSTED) == "2001:db8::5"


def test_ipv6_proxy_and_mapped_addresses() -> None:
    assert client_ip("fd00::1", "2001:db8::5", TRUSTED) == "2001:db8::5"
    assert client_ip("::ffff:10.0.0.2", "198.51.100.7", TRUSTED) == "198.51.100.7"
    assert client_ip("::ffff:203.0.113.10", None, TRUSTED) == "203.0.113.10"


def test_ipv6_clients_share_their_slash_64() -> None:
    a = rate_identifier("2001:db8:1:2::1")
    assert a == rate_identifier("2001:db8:1:2:ffff:ffff:ffff:ffff") == "2001:db8:1:2::/64"
    assert rate_identifier("2001:db8:1:3::1") != a
    assert rate_identifier("203.0.113.10") == "203.0.113.10"
    assert rate_identifier("::ffff:203.0.113.10") == "203.0.113.10"


# The local GCRA ----------------------------------------------------------------------------


def _take(buckets: LocalBuckets, now_us: int, key: str = "k", cost: int = 1) -> list[int]:
    return buckets.take(((key, emission_us(AUTH), AUTH.capacity, cost),), now_us=now_us)


def test_local_bucket_admits_rate_plus_burst_then_waits_one_emission() -> None:
    buckets = LocalBuckets()
    replies = [_take(buckets, 1_000_000) for _ in range(8)]
    assert [r[0] for r in replies] == [1] * 7 + [0]
    assert [r[1] for r in replies[:7]] == [6, 5, 4, 3, 2, 1, 0]
    assert replies[7][2] == 12_000  # retry after exactly one emission interval (12 s)
    assert replies[7][3] == 84_000  # full again after 7 emissions
    # One microsecond early is still refused; on time passes.
    assert _take(buckets, 1_000_000 + 12_000_000 - 1)[0] == 0
    assert _take(buckets, 1_000_000 + 12_000_000)[0] == 1


def test_local_bucket_refuses_a_cost_larger_than_the_bucket() -> None:
    buckets = LocalBuckets()
    assert _take(buckets, 5, cost=8) == [0, 7, -1, 0]
    assert _take(buckets, 5, cost=7)[0] == 1


def test_local_buckets_take_from_all_or_none() -> None:
    buckets = LocalBuckets()
    small = RateSpec(rate=1, period_s=60.0, burst=0)
    both = (("a", emission_us(AUTH), AUTH.capacity, 1), ("b", emission_us(small), 1, 1))
    assert buckets.take(both, now_us=0)[0::4] == [1, 1]
    refused = buckets.take(both, now_us=1)
    assert refused[0::4] == [0, 0]
    # "a" had room and was not charged: still 6 tokens and no wait of its own.
    assert refused[1] == 6 and refused[2] == 0
    assert refused[6] > 0  # "b" refused it


def test_local_buckets_forget_the_oldest_beyond_the_bound() -> None:
    buckets = LocalBuckets(max_keys=3)
    for key in ("a", "b", "c"):
        _take(buckets, 0, key)
    _take(buckets, 0, "a")  # "a" used again: "b" is now the oldest
    _take(buckets, 0, "d")
    assert len(buckets) == 3
    assert _take(buckets, 0, "b")[1] == 6  # forgotten, so full again
    assert _take(buckets, 0, "a")[1] == 4  # kept


# Headers ----------------------------------------------------------------------------------


def _decision(
    policy: str, allowed: bool, remaining: int, retry_ms: int, reset_ms: int
) -> RateDecision:
    return RateDecision(policy, allowed, 7, remaining, retry_ms, reset_ms, 60.0, "x")


def test_headers_carry_the_legacy_trio_and_the_draft_fields() -> None:
    headers = dict(rate_limit_headers([_decision("auth", True, 6, 0, 12_000)]))
    assert headers[b"ratelimit-limit"] == b"7"
    assert headers[b"ratelimit-remaining"] == b"6"
    assert headers[b"ratelimit-reset"] == b"12"
    assert headers[b"ratelimit-policy"] == b'"auth";q=7;w=60'
    assert headers[b"ratelimit"] == b'"auth";r=6;t=12'
    assert b"retry-after" not in headers


def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one() -> None:
    assert _decision("auth", False, 0, 1, 84_000).retry_after_s == 1
    assert _decision("auth", False, 0, 11_001, 84_000).retry_after_s == 12
    assert _decision("auth", False, 0, 12_000, 84_000).retry_after_s == 12
    headers = dict(rate_limit_headers([_decision("auth", False, 0, 11_001, 84_000)]))
    assert headers[b"retry-after"] == b"12"


def test_several_policies_are_listed_and_the_refusing_one_leads() -> None:
    api = _decision("api", False, 90, 0, 5_000)  # had room, not charged
    pdf = _decision("pdf", False, 0, 4_500, 70_000)
    assert headline([api, pdf]) is pdf
    headers = dict(rate_limit_headers([api, pdf]))
    assert headers[b"ratelimit-policy"] == b'"api";q=7;w=60, "pdf";q=7;w=60'
    assert headers[b"ratelimit-remaining"] == b"0"
    assert headers[b"retry-after"] == b"5"


# Configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("5/min+2", (5, 60.0, 2)), ("100/s", (100, 1.0, 0)), (" 3 / h + 1 ", (3, 3600.0, 1))],
)
def test_rates_parse(raw: str, expected: tuple[int, float, int]) -> None:
    spec = parse_rate(raw)
    assert (spec.rate, spec.period_s, spec.burst) == expected


@pytest.mark.parametrize("raw", ["5/minute+2", "five/min", "0/s", "5/min+", "5 per min", ""])
def test_malformed_rate_limit_stops_start_up_naming_the_variable(
    raw: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HEALTHFORMS_RATE_LIMIT_PUBLIC", raw)
    monkeypatch.setenv("HEALTHFORMS_DATA_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="HEALTHFORMS_RATE_LIMIT_PUBLIC"):
        load_settings()


def test_serve_refuses_a_malformed_rate_limit(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "HEALTHFORMS_DATA_DIR": str(tmp_path),
        "HEALTHFORMS_RATE_LIMIT_AUTH": "lots",
    }
    done = subprocess.run(
        [sys.executable, "-m", "healthforms", "serve", "--port", "1"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert b"HEALTHFORMS_RATE_LIMIT_AUTH" in done.stderr + done.stdout
