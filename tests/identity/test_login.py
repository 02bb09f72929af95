"""Password sign-in: identical failures, argon2id re-hash, TOTP, the per-account lock."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pyotp
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from sqlalchemy import select

from healthforms.audit.models import AuditEventRow
from healthforms.identity import passwords
from healthforms.identity.login import (
    LOGIN_FAILURE_LIMIT,
    LOGIN_LOCKOUT_S,
    SIGN_IN_HASHES_MIN,
)
from healthforms.identity.models import User
from tests.support.identity import GENEROUS_AUTH_RATE, Staff, create_staff, login, new_client


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"rate_limit_auth": GENEROUS_AUTH_RATE}


async def _attempt(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/api/auth/session-login", json=body)


async def _audit(app: FastAPI, action: str, user_id: str | None = None) -> list[AuditEventRow]:
    query = select(AuditEventRow).where(AuditEventRow.action == action)
    if user_id is not None:
        query = query.where(AuditEventRow.actor_id == user_id)
    async with app.state.hf.db.sessions() as session:
        return list((await session.execute(query)).scalars().all())


async def _user(app: FastAPI, user_id: str) -> User:
    async with app.state.hf.db.sessions() as session:
        user: User | None = await session.get(User, user_id)
        assert user is not None
        return user


async def test_every_wrong_part_gets_the_same_401(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    staff = await create_staff(app)
    disabled = await create_staff(app, organization=staff.organization_name)
    async with app.state.hf.db.sessions() as session:
        row = await session.get(User, disabled.id)
        assert row is not None
        row.disabled = True
        await session.commit()

    verified: list[bool] = []
    real_verify = passwords.verify_password_sync

    def counting_verify(stored_hash: str | None, password: str) -> bool:
        verified.append(stored_hash is None)
        return real_verify(stored_hash, password)

    monkeypatch.setattr(passwords, "verify_password_sync", counting_verify)
    attempts = [
        {"email": "nobody@example.test", "password": "whatever-password"},
        {"email": staff.email, "password": "wrong-password"},
        {"email": staff.email.upper(), "password": "wrong-password"},
        {"email": disabled.email, "password": disabled.password},
        {"idToken": "not.a.token"},  # no OIDC issuer configured
    ]
    bodies = []
    for body in attempts:
        response = await _attempt(client, **body)
        assert response.status_code == 401, body
        assert "set-cookie" not in response.headers
        bodies.append(response.json())
    assert all(
        b == {"error": "Email or password is incorrect.", "code": "invalid_credentials"}
        for b in bodies
    )
    # The same number of argon2 verifies for every password attempt (dummy hashes fill
    # up): one real hash each for the three attempts naming an account.
    assert len(verified) == 4 * SIGN_IN_HASHES_MIN
    assert verified.count(False) == 3
    failures = await _audit(app, "auth.login_failed")
    assert len([f for f in failures if f.actor_id == staff.id]) == 2
    assert all("@" not in (f.resource_id or "") for f in failures)


async def test_missing_fields_are_a_validation_error(client: httpx.AsyncClient) -> None:
    response = await _attempt(client, email="a@b.test")
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert "password" in response.json()["fields"]
    malformed = await client.post(
        "/api/auth/session-login",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert malformed.status_code == 400


async def test_login_is_audited_with_ids_only(app: FastAPI, client: httpx.AsyncClient) -> None:
    staff = await create_staff(app)
    signed = await login(client, staff)
    events = await _audit(app, "auth.login", staff.id)
    assert len(events) == 1
    assert events[0].organization_id == staff.organization_id
    assert events[0].resource_type == "session"
    assert events[0].ip == "203.0.113.10"
    await client.post("/api/auth/logout", headers=signed.csrf_headers)
    assert len(await _audit(app, "auth.logout", staff.id)) == 1


async def test_weaker_hash_is_upgraded_at_the_next_login(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    staff = await create_staff(app)
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)
    async with app.state.hf.db.sessions() as session:
        row = await session.get(User, staff.id)
        assert row is not None
        row.password_hash = weak.hash(staff.password)
        await session.commit()
    assert passwords.needs_rehash((await _user(app, staff.id)).password_hash or "")
    await login(client, staff)
    upgraded = (await _user(app, staff.id)).password_hash or ""
    assert upgraded.startswith("$argon2id$")
    hasher = passwords.PASSWORD_HASHER
    assert f"m={hasher.memory_cost},t={hasher.time_cost},p={hasher.parallelism}" in upgraded
    assert not passwords.needs_rehash(upgraded)
    async with new_client(app) as again:
        await login(again, staff)  # and the new hash verifies


async def test_account_lock_after_repeated_failures_from_many_addresses(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    staff = await create_staff(app)
    for i in range(LOGIN_FAILURE_LIMIT):
        async with new_client(app, ip=f"198.51.100.{i + 1}") as attacker:
            response = await _attempt(attacker, email=staff.email, password=f"guess-{i}")
            # The failure that locks says so at once, with the wait.
            expected = 429 if i == LOGIN_FAILURE_LIMIT - 1 else 401
            assert response.status_code == expected
    # Locked: even the right password is refused for a while, and the answer says how long.
    locked = await _attempt(client, email=staff.email, password=staff.password)
    assert locked.status_code == 429
    assert locked.json()["code"] == "account_locked"
    assert "set-cookie" not in locked.headers
    assert 0 < int(locked.headers["retry-after"]) <= LOGIN_LOCKOUT_S
    lock_events = await _audit(app, "auth.account_locked", staff.id)
    assert len(lock_events) == 1 and lock_events[0].outcome == "denied"
    # Another account is not affected.
    other = await create_staff(app)
    await login(client, other)


async def test_success_resets_the_failure_count(app: FastAPI, client: httpx.AsyncClient) -> None:
    staff = await create_staff(app)
    for _ in range(LOGIN_FAILURE_LIMIT - 1):
        await _attempt(client, email=staff.email, password="wrong-password")
    await login(client, staff)
    for _ in range(LOGIN_FAILURE_LIMIT - 1):
        await _attempt(client, email=staff.email, password="wrong-password")
    await login(client, staff)


async def _enrol_totp(client: httpx.AsyncClient, staff: Staff) -> str:
    signed = await login(client, staff)
    started = await client.post(
        "/api/auth/totp/enrol",
        json={"currentPassword": staff.password},
        headers=signed.csrf_headers,
    )
    assert started.status_code == 200, started.text
    secret: str = started.json()["secret"]
    assert started.json()["otpauthUri"].startswith("otpauth://totp/")
    wrong = await client.post(
        "/api/auth/totp/confirm", json={"code": "000000"}, headers=signed.csrf_headers
    )
    assert wrong.status_code == 400 and wrong.json()["code"] == "totp_invalid"
    confirmed = await client.post(
        "/api/auth/totp/confirm",
        json={"code": pyotp.TOTP(secret).now()},
        headers=signed.csrf_headers,
    )
    assert confirmed.status_code == 200
    assert len(confirmed.json()["recoveryCodes"]) == 10
    again = await client.post(
        "/api/auth/totp/enrol",
        json={"currentPassword": staff.password},
        headers=signed.csrf_headers,
    )
    assert again.status_code == 409
    return secret


async def test_totp_enrolment_then_login_requires_a_fresh_code(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    staff = await create_staff(app)
    secret = await _enrol_totp(client, staff)
    stored = (await _user(app, staff.id)).totp_secret_encrypted or b""
    assert secret.encode() not in stored  # sealed at rest
    body = {"email": staff.email, "password": staff.password}
    asked = await _attempt(client, **body)
    assert asked.status_code == 401 and asked.json()["code"] == "totp_required"
    wrong = await _attempt(client, **body, totp="123456")
    assert wrong.status_code == 401 and wrong.json()["code"] == "invalid_credentials"
    totp = pyotp.TOTP(secret)
    # A code of a step not yet used (the next one, within the drift window).
    code = totp.at(time.time() + 30)
    ok = await _attempt(client, **body, totp=code)
    assert ok.status_code == 200
    # The same code again is a replay.
    replay = await _attempt(client, **body, totp=code)
    assert replay.status_code == 401
    assert replay.json()["code"] == "invalid_credentials"
    me = await client.get("/api/auth/me")
    assert me.status_code == 200


async def test_totp_secret_is_bound_to_its_user(app: FastAPI, client: httpx.AsyncClient) -> None:
    alice = await create_staff(app)
    bob = await create_staff(app, organization=alice.organization_name)
    secret = await _enrol_totp(client, alice)
    # Copy Alice's sealed secret onto Bob's row: it must not decrypt for Bob.
    async with app.state.hf.db.sessions() as session:
        a = await session.get(User, alice.id)
        b = await session.get(User, bob.id)
        assert a is not None and b is not None
        b.totp_secret_encrypted = a.totp_secret_encrypted
        b.totp_enabled = True
        await session.commit()
    response = await _attempt(
        client, email=bob.email, password=bob.password, totp=pyotp.TOTP(secret).now()
    )
    assert response.status_code == 401


async def test_totp_endpoints_need_a_session(client: httpx.AsyncClient) -> None:
    assert (await client.post("/api/auth/totp/enrol")).status_code == 401
