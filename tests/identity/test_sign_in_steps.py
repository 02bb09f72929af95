"""Signing in as a clinic does (issue 12 item 10): staff behind one public address get
their `auth` token back on success while failures keep counting; the lock says how long
it lasts; the TOTP step is asked for only once the password was right."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pyotp
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from healthforms.identity.login import LOGIN_FAILURE_LIMIT, failure_key
from healthforms.security.ratelimit import LocalBuckets
from tests.support.identity import Staff, create_staff, login, new_client

CLINIC_IP = "198.51.100.77"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"rate_limit_auth": "5/min+2"}  # the seed's auth policy (API.md)


async def _sign_in(
    http: httpx.AsyncClient, email: str, password: str, **extra: Any
) -> httpx.Response:
    return await http.post(
        "/api/auth/session-login", json={"email": email, "password": password, **extra}
    )


async def test_a_clinic_behind_one_address_is_not_locked_out_by_its_own_sign_ins(
    app: FastAPI,
) -> None:
    staff = [await create_staff(app) for _ in range(4)]
    async with new_client(app, ip=CLINIC_IP) as clinic:
        # Three times the bucket (5/min + 2) of successful sign-ins within a minute.
        for i in range(21):
            member = staff[i % len(staff)]
            response = await _sign_in(clinic, member.email, member.password)
            assert response.status_code == 200, (i, response.text)
            assert int(response.headers["ratelimit-remaining"]) >= 0


async def test_failed_sign_ins_still_count_against_the_address(app: FastAPI) -> None:
    member = await create_staff(app)
    async with new_client(app, ip=CLINIC_IP) as clinic:
        # Successes in between give back only their own token.
        for _ in range(6):
            assert (await _sign_in(clinic, member.email, "wrong password")).status_code == 401
            assert (await _sign_in(clinic, member.email, member.password)).status_code == 200
        assert (await _sign_in(clinic, member.email, "wrong password")).status_code == 401
        refused = await _sign_in(clinic, member.email, member.password)
        assert refused.status_code == 429
        assert refused.json()["code"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 12
    async with new_client(app, ip="198.51.100.78") as elsewhere:
        assert (await _sign_in(elsewhere, member.email, member.password)).status_code == 200


async def test_the_lock_message_says_how_long_is_left(
    app: FastAPI, redis_client: Redis, redis_prefix: str
) -> None:
    member = await create_staff(app)
    for i in range(LOGIN_FAILURE_LIMIT):
        async with new_client(app, ip=f"198.51.100.{100 + i}") as guesser:
            last = await _sign_in(guesser, member.email, f"guess number {i}")
    assert last.status_code == 429
    assert last.json()["code"] == "account_locked"
    assert "15 minutes" in last.json()["error"]
    key = failure_key(app.state.hf.redis, app.state.hf.keys, member.email)
    assert key.startswith(redis_prefix) and member.email.encode() not in key.encode()
    # Time passes (the lock's TTL is its truth): the answer follows it.
    for ttl_ms, text, seconds in [(125_000, "3 minutes", 125), (40_000, "40 seconds", 40)]:
        await redis_client.pexpire(key, ttl_ms)
        async with new_client(app, ip="198.51.100.250") as browser:
            locked = await _sign_in(browser, member.email, member.password)
        assert locked.status_code == 429
        body = locked.json()
        assert body["code"] == "account_locked"
        assert body["error"].endswith(f"Try again in {text}.")
        assert seconds - 2 <= body["retryAfter"] <= seconds
        assert locked.headers["retry-after"] == str(body["retryAfter"])
        assert "set-cookie" not in locked.headers
    await redis_client.delete(key)
    async with new_client(app, ip="198.51.100.251") as browser:
        assert (await _sign_in(browser, member.email, member.password)).status_code == 200


async def test_an_unknown_email_locks_alike_so_the_lock_reveals_no_account(
    app: FastAPI,
) -> None:
    answers = []
    for i in range(LOGIN_FAILURE_LIMIT + 1):
        async with new_client(app, ip=f"198.51.100.{150 + i}") as guesser:
            answers.append(await _sign_in(guesser, "nobody-here@example.test", f"guess {i}"))
    assert [a.status_code for a in answers[:-2]] == [401] * (LOGIN_FAILURE_LIMIT - 1)
    assert answers[-1].json()["code"] == "account_locked"


async def _with_totp(app: FastAPI, client: httpx.AsyncClient) -> tuple[Staff, str]:
    member = await create_staff(app)
    signed = await login(client, member)
    started = await client.post(
        "/api/auth/totp/enrol",
        json={"currentPassword": member.password},
        headers=signed.csrf_headers,
    )
    secret: str = started.json()["secret"]
    confirmed = await client.post(
        "/api/auth/totp/confirm",
        json={"code": pyotp.TOTP(secret).now()},
        headers=signed.csrf_headers,
    )
    assert confirmed.status_code == 200
    return member, secret


async def test_the_code_is_asked_for_only_after_the_right_password(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    member, secret = await _with_totp(app, client)
    plain = await create_staff(app)
    async with new_client(app, ip="198.51.100.201") as browser:
        # A wrong password, an unknown email, an account without TOTP: never totp_required.
        for email, password in [
            (member.email, "wrong password"),
            ("nobody@example.test", member.password),
            (plain.email, "wrong password"),
        ]:
            response = await _sign_in(browser, email, password)
            assert response.status_code == 401
            assert response.json()["code"] == "invalid_credentials"
        asked = await _sign_in(browser, member.email, member.password)
        assert asked.status_code == 401
        assert asked.json() == {
            "error": "Enter the code from your authenticator app, or one of your recovery codes.",
            "code": "totp_required",
        }
        assert member.password not in asked.text and "set-cookie" not in asked.headers
        wrong_code = await _sign_in(browser, member.email, member.password, totp="000000")
        assert wrong_code.json()["code"] == "invalid_credentials"
        good = await _sign_in(
            browser, member.email, member.password, totp=pyotp.TOTP(secret).at(time.time() + 30)
        )
        assert good.status_code == 200


async def test_being_asked_for_the_code_is_not_a_failure(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    member, secret = await _with_totp(app, client)
    for i in range(LOGIN_FAILURE_LIMIT + 2):
        async with new_client(app, ip=f"198.51.100.{10 + i}") as browser:
            asked = await _sign_in(browser, member.email, member.password)
            assert asked.json()["code"] == "totp_required"
    async with new_client(app, ip="198.51.100.9") as browser:
        good = await _sign_in(
            browser, member.email, member.password, totp=pyotp.TOTP(secret).at(time.time() + 30)
        )
        assert good.status_code == 200


async def test_give_back_returns_one_token_and_never_overfills(app: FastAPI) -> None:
    limiter = app.state.hf.limiter
    identifier = "203.0.113.99"
    first = await limiter.check_one("auth", identifier)
    second = await limiter.check_one("auth", identifier)
    assert (first.decisions[0].remaining, second.decisions[0].remaining) == (6, 5)
    await limiter.give_back(second.decisions[0])
    third = await limiter.check_one("auth", identifier)
    assert third.decisions[0].remaining == 5
    for _ in range(3):  # more than was taken: the bucket stops at full
        await limiter.give_back(third.decisions[0])
    fourth = await limiter.check_one("auth", identifier)
    assert fourth.decisions[0].remaining == 6


def test_local_buckets_give_back_like_the_script() -> None:
    now = [1_000_000_000]
    buckets = LocalBuckets(clock=lambda: now[0])
    emission = 12_000_000  # 5/min
    for expected in (6, 5, 4):
        assert buckets.take([("k", emission, 7, 1)])[1] == expected
    buckets.give_back("k", emission)
    assert buckets.take([("k", emission, 7, 1)])[1] == 4
    for _ in range(10):
        buckets.give_back("k", emission)
    assert len(buckets) == 0  # full again: forgotten
    assert buckets.take([("k", emission, 7, 1)])[1] == 6


@pytest.mark.parametrize(
    "code",
    ["١٢٣٤٥٦", "１２３４５６", "12345６", "x" * 32, "----", " ", "ǅǅǅǅ-ǅǅǅǅ-ǅǅǅǅ-ǅǅǅǅ"],
)
async def test_a_hostile_code_is_a_plain_no(
    app: FastAPI, client: httpx.AsyncClient, code: str
) -> None:
    member, _ = await _with_totp(app, client)
    async with new_client(app, ip="198.51.100.202") as browser:
        response = await _sign_in(browser, member.email, member.password, totp=code)
    assert response.status_code == 401
    assert response.json()["code"] in ("invalid_credentials", "totp_required")
