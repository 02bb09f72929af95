"""Another clinic's accounts cannot be probed (issue 12 item 13): emails are unique per
organisation, so creating an account whose email another clinic uses simply succeeds,
and sign-in finds the one account the password opens."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from healthforms.db.engine import create_engine
from healthforms.db.migrate import upgrade
from healthforms.identity import passwords
from healthforms.identity.login import SIGN_IN_HASHES_MIN
from tests.support import legs
from tests.support.identity import GENEROUS_AUTH_RATE, create_staff, login, new_client


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"rate_limit_auth": GENEROUS_AUTH_RATE}


def _body(email: str) -> dict[str, str]:
    return {"email": email, "name": "New Person", "password": "a long enough pw", "role": "viewer"}


async def test_an_email_used_by_another_clinic_answers_exactly_like_a_fresh_one(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    admin = await login(client, await create_staff(app, role="admin"))
    elsewhere = await create_staff(app)  # another clinic's account
    fresh_email = f"fresh-{secrets.token_hex(4)}@example.test"
    taken = await client.post(
        "/api/users", json=_body(elsewhere.email.upper()), headers=admin.csrf_headers
    )
    fresh = await client.post("/api/users", json=_body(fresh_email), headers=admin.csrf_headers)
    assert (taken.status_code, fresh.status_code) == (201, 201)
    assert set(taken.json()) == set(fresh.json())
    assert taken.json()["organizationId"] == admin.staff.organization_id
    # Only the caller's own organisation gets 409.
    again = await client.post("/api/users", json=_body(elsewhere.email), headers=admin.csrf_headers)
    assert again.status_code == 409 and again.json()["code"] == "email_taken"
    assert "another" not in again.text.lower()
    # The other clinic's account is untouched and still signs in with its password.
    async with new_client(app) as browser:
        theirs = await browser.post(
            "/api/auth/session-login",
            json={"email": elsewhere.email, "password": elsewhere.password},
        )
        assert theirs.status_code == 200
        assert theirs.json()["user"]["organizationId"] == elsewhere.organization_id


async def test_sign_in_picks_the_account_the_password_opens(app: FastAPI) -> None:
    email = f"both-{secrets.token_hex(4)}@example.test"
    first = await create_staff(app, email=email, password="first clinic pass")
    second = await create_staff(app, email=email, password="second clinic pass")
    async with new_client(app) as browser:
        for staff in (first, second):
            response = await browser.post(
                "/api/auth/session-login", json={"email": email, "password": staff.password}
            )
            assert response.status_code == 200
            assert response.json()["user"]["id"] == staff.id
        wrong = await browser.post(
            "/api/auth/session-login", json={"email": email, "password": "neither of them"}
        )
        assert wrong.status_code == 401 and wrong.json()["code"] == "invalid_credentials"


async def test_one_password_for_two_clinics_asks_which_one(app: FastAPI) -> None:
    email = f"same-{secrets.token_hex(4)}@example.test"
    first = await create_staff(app, email=email, password="one password for both")
    second = await create_staff(app, email=email, password="one password for both")
    async with new_client(app) as browser:
        body = {"email": email, "password": "one password for both"}
        asked = await browser.post("/api/auth/session-login", json=body)
        assert asked.status_code == 409
        assert asked.json()["code"] == "organization_required"
        listed = {o["id"]: o["name"] for o in asked.json()["organizations"]}
        assert listed == {
            first.organization_id: first.organization_name,
            second.organization_id: second.organization_name,
        }
        assert "set-cookie" not in asked.headers
        chosen = await browser.post(
            "/api/auth/session-login", json={**body, "organizationId": second.organization_id}
        )
        assert chosen.status_code == 200
        assert chosen.json()["user"]["id"] == second.id
        # A wrong password with an organisation named reveals nothing either.
        wrong = await browser.post(
            "/api/auth/session-login",
            json={"email": email, "password": "nope nope", "organizationId": "org_x"},
        )
        assert wrong.status_code == 401


async def test_every_attempt_costs_the_same_hashes_however_many_clinics_use_the_email(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = f"shared-{secrets.token_hex(4)}@example.test"
    await create_staff(app, email=shared)
    await create_staff(app, email=shared)
    single = await create_staff(app)
    verified: list[bool] = []
    real_verify = passwords.verify_password_sync

    def counting_verify(stored_hash: str | None, password: str) -> bool:
        verified.append(stored_hash is not None)
        return real_verify(stored_hash, password)

    monkeypatch.setattr(passwords, "verify_password_sync", counting_verify)
    counts = []
    async with new_client(app) as browser:
        for email in ("nobody@example.test", single.email, shared):
            verified.clear()
            response = await browser.post(
                "/api/auth/session-login", json={"email": email, "password": "wrong password"}
            )
            assert response.status_code == 401
            assert response.json()["code"] == "invalid_credentials"
            counts.append(len(verified))
    assert counts == [SIGN_IN_HASHES_MIN] * 3


def _fresh_database(tmp_path: Path) -> str:
    if legs.database_is_postgres():
        name = f"hf_test_{secrets.token_hex(6)}"
        asyncio.run(legs._pg_admin(f'CREATE DATABASE "{name}"'))
        return make_url(legs.TEST_DATABASE).set(database=name).render_as_string(hide_password=False)
    return f"sqlite+aiosqlite:///{tmp_path / 'migrate.db'}"


def test_the_migration_keeps_users_and_what_refers_to_them(tmp_path: Path) -> None:
    url = _fresh_database(tmp_path)
    try:
        upgrade(url, "0005_audit_chains")
        asyncio.run(_seed_before(url))
        upgrade(url)
        asyncio.run(_check_after(url))
    finally:
        legs.drop_database(url)


async def _seed_before(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO organizations (id, name, created_at) VALUES "
                    "('org_a', 'A', CURRENT_TIMESTAMP), ('org_b', 'B', CURRENT_TIMESTAMP)"
                )
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO users (id, organization_id, email, name, role, disabled, "
                    "totp_enabled, created_at, updated_at) VALUES ('usr_1', 'org_a', "
                    "'a@clinic.test', 'A', 'admin', false, false, CURRENT_TIMESTAMP, "
                    "CURRENT_TIMESTAMP)"
                )
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO session_revocations (session_hash, user_id, expires_at) "
                    "VALUES ('ended-session', 'usr_1', CURRENT_TIMESTAMP)"
                )
            )
    finally:
        await engine.dispose()


async def _check_after(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            # An ended session's record survives (SQLite rebuilds the users table: with
            # foreign keys on, the rebuild would have cascaded into it).
            kept = await conn.scalar(sa.text("SELECT count(*) FROM session_revocations"))
            assert kept == 1
            # The same email in another organisation is allowed now, in the same one not.
            insert = (
                "INSERT INTO users (id, organization_id, email, name, role, disabled, "
                "totp_enabled, created_at, updated_at) VALUES (:id, :org, 'a@clinic.test', "
                "'A', 'admin', false, false, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
            await conn.execute(sa.text(insert), {"id": "usr_2", "org": "org_b"})
        with pytest.raises(sa.exc.IntegrityError):
            async with engine.begin() as conn:
                await conn.execute(sa.text(insert), {"id": "usr_3", "org": "org_a"})
    finally:
        await engine.dispose()
