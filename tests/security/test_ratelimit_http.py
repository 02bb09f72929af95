"""Rate limits as clients see them: login and public paths, headers, 429s, IPs, audit, metrics."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import select

from healthforms.audit.events import RATELIMIT_EXCEEDED
from healthforms.audit.models import AuditEventRow
from tests.security.conftest import AppFactory, client_for

LOGIN = "/api/auth/session-login"
CREDENTIALS = {"email": "nobody@example.org", "password": "wrong-password"}
RATE_HEADERS = (
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "ratelimit-policy",
    "ratelimit",
)


def assert_rate_headers(response: httpx.Response) -> None:
    for name in RATE_HEADERS:
        assert name in response.headers, (name, response.status_code)


async def login_attempts(
    client: httpx.AsyncClient, count: int, **kwargs: object
) -> list[httpx.Response]:
    return [await client.post(LOGIN, json=CREDENTIALS, **kwargs) for _ in range(count)]  # type: ignore[arg-type]


async def test_seven_rapid_logins_pass_the_limiter_and_the_eighth_is_429(
    client: httpx.AsyncClient,
) -> None:
    responses = await login_attempts(client, 8)
    for response in responses[:7]:
        assert response.status_code != 429
        assert_rate_headers(response)
    assert [int(r.headers["ratelimit-remaining"]) for r in responses[:7]] == [6, 5, 4, 3, 2, 1, 0]
    assert responses[0].headers["ratelimit-limit"] == "7"
    assert responses[0].headers["ratelimit-policy"] == '"auth";q=7;w=60'
    refused = responses[7]
    assert refused.status_code == 429
    assert refused.json() == {
        "error": "Too many requests. Try again later.",
        "code": "rate_limited",
    }
    assert 1 <= int(refused.headers["retry-after"]) <= 12
    assert refused.headers["ratelimit-remaining"] == "0"
    assert_rate_headers(refused)
    # The edge still adds its headers to a refusal.
    assert refused.headers["x-content-type-options"] == "nosniff"
    assert "x-request-id" in refused.headers


async def test_a_request_sent_after_retry_after_passes(app_factory: AppFactory) -> None:
    async with (
        app_factory(rate_limit_auth="5/s+2") as app,
        client_for(app, "203.0.113.20") as client,
    ):
        responses = await login_attempts(client, 8)
        assert [r.status_code == 429 for r in responses] == [False] * 7 + [True]
        wait = int(responses[7].headers["retry-after"])
        assert wait == 1
        await asyncio.sleep(wait)
        again = await client.post(LOGIN, json=CREDENTIALS)
        assert again.status_code != 429
        assert_rate_headers(again)


async def test_retry_after_is_the_wait_for_the_next_token(app_factory: AppFactory) -> None:
    async with (
        app_factory(rate_limit_auth="1/s+1") as app,
        client_for(app, "203.0.113.21") as client,
    ):
        responses = await login_attempts(client, 3)
        assert [r.status_code == 429 for r in responses] == [False, False, True]
        await asyncio.sleep(int(responses[2].headers["retry-after"]))
        again = await login_attempts(client, 2)
        # Exactly one token came back in that time.
        assert [r.status_code == 429 for r in again] == [False, True]


async def test_forged_forwarded_for_from_an_untrusted_peer_shares_the_peer_bucket(
    client: httpx.AsyncClient,
) -> None:
    responses = [
        await client.post(LOGIN, json=CREDENTIALS, headers={"X-Forwarded-For": f"198.51.100.{i}"})
        for i in range(8)
    ]
    assert [r.status_code == 429 for r in responses] == [False] * 7 + [True]


async def test_behind_a_trusted_proxy_each_client_has_its_own_bucket(
    app_factory: AppFactory,
) -> None:
    async with (
        app_factory(trusted_proxies=["10.0.0.0/8"]) as app,
        client_for(app, "10.1.2.3") as proxy,
    ):
        # The leftmost entry is the client's forgery; the proxy appended the real address.
        first = await login_attempts(proxy, 8, headers={"X-Forwarded-For": "1.1.1.1, 198.51.100.1"})
        forged_left = await login_attempts(
            proxy, 1, headers={"X-Forwarded-For": "9.9.9.9, 198.51.100.1"}
        )
        other = await login_attempts(proxy, 1, headers={"X-Forwarded-For": "198.51.100.2"})
    assert [r.status_code == 429 for r in first] == [False] * 7 + [True]
    assert forged_left[0].status_code == 429
    assert other[0].status_code != 429
    assert other[0].headers["ratelimit-remaining"] == "6"


async def test_ipv6_clients_in_one_slash_64_share_a_bucket(app_factory: AppFactory) -> None:
    async with app_factory() as app:
        async with (
            client_for(app, "2001:db8:1:2::1") as a,
            client_for(app, "2001:db8:1:2:abcd::9") as b,
        ):
            mixed = [await (a if i % 2 else b).post(LOGIN, json=CREDENTIALS) for i in range(8)]
        async with client_for(app, "2001:db8:1:3::1") as neighbour:
            elsewhere = await neighbour.post(LOGIN, json=CREDENTIALS)
    assert [r.status_code == 429 for r in mixed] == [False] * 7 + [True]
    assert elsewhere.status_code != 429


async def test_unauthenticated_auth_posts_share_the_auth_bucket_but_reads_do_not(
    app_factory: AppFactory,
) -> None:
    async with app_factory() as app, client_for(app, "203.0.113.30") as client:
        reads = [await client.get("/api/auth/me") for _ in range(10)]
        assert all(r.status_code != 429 for r in reads)
        assert all("ratelimit-limit" not in r.headers for r in reads)
        posts = [await client.post("/api/auth/logout") for _ in range(4)]
        logins = await login_attempts(client, 4)
    assert all(r.status_code != 429 for r in posts)
    assert_rate_headers(posts[0])
    assert [r.status_code == 429 for r in logins] == [False, False, False, True]


async def test_public_paths_use_the_public_policy(app_factory: AppFactory) -> None:
    async with (
        app_factory(rate_limit_public="2/min+1") as app,
        client_for(app, "203.0.113.40") as client,
    ):
        responses = [await client.get("/api/public/forms/nope") for _ in range(4)]
        login = await client.post(LOGIN, json=CREDENTIALS)
    assert [r.status_code == 429 for r in responses] == [False] * 3 + [True]
    assert responses[0].headers["ratelimit-policy"] == '"public";q=3;w=60'
    assert login.status_code != 429  # a separate bucket


async def test_health_and_pages_are_not_limited(client: httpx.AsyncClient) -> None:
    responses = [await client.get("/health") for _ in range(10)]
    assert all(r.status_code == 200 and "ratelimit-limit" not in r.headers for r in responses)


async def test_a_flood_is_counted_logged_and_audited_once_per_window(
    app_factory: AppFactory,
) -> None:
    async with (
        app_factory(rate_limit_auth="1/min+0") as app,
        client_for(app, "203.0.113.50") as client,
    ):
        responses = await login_attempts(client, 6)
        assert [r.status_code for r in responses[1:]] == [429] * 5
        metrics = (await client.get("/metrics")).text
        assert 'healthforms_ratelimit_rejections_total{policy="auth"} 5.0' in metrics
        request_ids = {r.headers["x-request-id"] for r in responses}
        async with app.state.hf.db.sessions() as session:
            rows = (
                await session.scalars(
                    select(AuditEventRow).where(AuditEventRow.action == RATELIMIT_EXCEEDED)
                )
            ).all()
    ours = [row for row in rows if row.request_id in request_ids]
    assert len(ours) == 1
    event = ours[0]
    assert event.outcome == "denied"
    assert event.resource_id == "auth"
    assert event.ip == "203.0.113.50"
    assert event.request_id == responses[1].headers["x-request-id"]


async def test_the_audit_dedupe_is_shared_across_instances(app_factory: AppFactory) -> None:
    # Two apps on the same Redis and database stand in for two instances.
    async with (
        app_factory(rate_limit_auth="1/min+0") as one,
        app_factory(rate_limit_auth="1/min+0") as two,
    ):
        async with client_for(one, "203.0.113.51") as a, client_for(two, "203.0.113.51") as b:
            responses = [await (a if i % 2 else b).post(LOGIN, json=CREDENTIALS) for i in range(6)]
        request_ids = {r.headers["x-request-id"] for r in responses}
        async with one.state.hf.db.sessions() as session:
            rows = (
                await session.scalars(
                    select(AuditEventRow).where(AuditEventRow.action == RATELIMIT_EXCEEDED)
                )
            ).all()
    assert [r.status_code == 429 for r in responses] == [False] + [True] * 5
    assert len([row for row in rows if row.request_id in request_ids]) == 1
