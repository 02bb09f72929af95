"""SSRF: in production a webhook goes to https and to public addresses only, checked
when the URL is registered and again before every call, on the addresses the call
then connects to. Nothing here opens a connection to a refused address: the refusals
come before any connect (the only traffic is to this machine's own test receiver)."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from healthforms.security.principal import Role
from healthforms.webhooks.addresses import Policy, UnsafeUrl, parse_url, refused_reason
from healthforms.webhooks.models import WebhookEndpoint
from tests.outbox.conftest import AppFactory, eventually
from tests.support.identity import create_staff, login
from tests.support.response_factory import create_organization
from tests.support.staff import organization_name, signed_in_client
from tests.webhooks.conftest import ALL_EVENTS, add_endpoint
from tests.webhooks.receiver import Receiver

REFUSED = [
    "https://127.0.0.1/hook",
    "https://127.8.9.10/hook",
    "https://169.254.169.254/latest/meta-data/",
    "https://10.1.2.3/hook",
    "https://172.16.0.5/hook",
    "https://192.168.1.20/hook",
    "https://100.64.0.1/hook",
    "https://0.0.0.0/hook",
    "https://224.0.0.1/hook",
    "https://240.0.0.1/hook",
    "https://[::1]/hook",
    "https://[::]/hook",
    "https://[fe80::1]/hook",
    "https://[fd12:3456::1]/hook",
    "https://[::ffff:127.0.0.1]/hook",
    "https://[::ffff:169.254.169.254]/hook",
    "https://[64:ff9b::a9fe:a9fe]/hook",
    "https://localhost/hook",
    "https://localhost./hook",
]


@asynccontextmanager
async def production_admin(app: FastAPI, organization_id: str) -> AsyncIterator[httpx.AsyncClient]:
    """An admin's browser over https (production cookies are Secure)."""
    staff = await create_staff(
        app, role=Role.ADMIN, organization=await organization_name(app, organization_id)
    )
    transport = httpx.ASGITransport(app=app, client=("203.0.113.10", 40001))
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
        signed_in = await login(http, staff)
        http.headers.update(signed_in.csrf_headers)
        yield http


@pytest.mark.parametrize("url", REFUSED)
async def test_production_refuses_private_and_special_addresses(url: str) -> None:
    policy = Policy(production=True)
    with pytest.raises(UnsafeUrl):
        await policy.check(parse_url(url, production=True))


async def test_production_wants_https_and_allows_public_addresses_and_allowlisted_hosts() -> None:
    with pytest.raises(UnsafeUrl, match="https"):
        parse_url("http://93.184.216.34/hook", production=True)
    public = Policy(production=True)
    assert await public.check(parse_url("https://93.184.216.34/h", production=True)) == [
        ipaddress.ip_address("93.184.216.34")
    ]
    own = ipaddress.ip_address("93.184.216.34")
    with pytest.raises(UnsafeUrl, match="own"):
        await Policy(production=True, own=frozenset({own})).check(
            parse_url("https://93.184.216.34/h", production=True)
        )
    allowed = Policy(production=True, allow_hosts=frozenset({"localhost"}))
    addresses = await allowed.check(parse_url("https://localhost/h", production=True))
    assert all(a.is_loopback for a in addresses)
    # Outside production: http and loopback, for tests and laptops.
    assert await Policy(production=False).check(parse_url("http://127.0.0.1:9/h", production=False))
    assert refused_reason(ipaddress.ip_address("8.8.8.8")) is None
    assert refused_reason(ipaddress.ip_address("100.127.255.255")) is not None


async def test_the_api_refuses_ssrf_targets_in_production(webhook_app: AppFactory) -> None:
    async with webhook_app(env="production", outbox_worker=False) as app:
        org = await create_organization(app.state.hf.db)
        async with production_admin(app, org) as admin:
            for url in [*REFUSED, "http://ehr.clinic.example/hook"]:
                answer = await admin.post("/api/webhooks", json={"url": url, "events": ALL_EVENTS})
                assert answer.status_code == 422, (url, answer.text)
                assert "url" in answer.json()["fields"]
            assert (await admin.get("/api/webhooks")).json()["endpoints"] == []


async def test_a_url_that_turns_private_after_registration_is_refused_at_send_time(
    webhook_app: AppFactory,
) -> None:
    """As if the host's DNS answer changed after registration (rebinding): the call is
    checked again and never made."""
    receiver = Receiver()
    receiver.start()
    try:
        async with webhook_app(env="production", webhook_max_attempts=2) as app:
            org = await create_organization(app.state.hf.db)
            async with production_admin(app, org) as admin:
                endpoint_id, _ = await add_endpoint(admin, "https://93.184.216.34/hook")
                async with app.state.hf.db.sessions() as session, session.begin():
                    await session.execute(
                        update(WebhookEndpoint)
                        .where(WebhookEndpoint.id == endpoint_id)
                        .values(url=f"https://localhost:{receiver.port}/hook")
                    )
                assert (await admin.post(f"/api/webhooks/{endpoint_id}/test")).status_code == 202

                async def dead() -> list[dict[str, object]]:
                    answer = await admin.get(f"/api/webhooks/{endpoint_id}/deliveries")
                    body = answer.json()
                    return (
                        list(body["attempts"]) if body["deliveries"][0]["status"] == "dead" else []
                    )

                attempts = await eventually(dead)
                assert {a["error"] for a in attempts} == {"UnsafeUrl"}
                assert all(a["statusCode"] is None for a in attempts)
                assert receiver.received() == []
    finally:
        receiver.stop()


async def test_the_call_is_pinned_to_the_checked_address_and_names_the_host(
    webhook_app: AppFactory,
) -> None:
    receiver = Receiver()
    receiver.start()
    try:
        async with webhook_app() as app:
            org = await create_organization(app.state.hf.db)
            async with signed_in_client(app, org, Role.ADMIN) as (admin, _):
                url = f"http://localhost:{receiver.port}/hooks?clinic=1"
                endpoint_id, secret = await add_endpoint(admin, url)
                await admin.post(f"/api/webhooks/{endpoint_id}/test")

                async def arrived() -> bool:
                    return len(receiver.received()) == 1

                await eventually(arrived)
                (call,) = receiver.received()
                assert call.headers["host"] == f"localhost:{receiver.port}"
                assert call.path == "/hooks?clinic=1"
                assert call.verify(secret)["data"]["test"] is True
    finally:
        receiver.stop()
