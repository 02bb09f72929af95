"""The admin user API, organisation scoping, session ends on disable, and the CLI."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import select
from typer.testing import CliRunner

from healthforms.audit.models import AuditEventRow
from healthforms.cli import app as cli_app
from healthforms.db.engine import Database
from healthforms.identity.login import LOGIN_FAILURE_LIMIT
from healthforms.identity.models import Organization, User
from healthforms.identity.passwords import verify_password_sync
from tests.support.identity import (
    DEFAULT_PASSWORD,
    GENEROUS_AUTH_RATE,
    SignedIn,
    create_staff,
    login,
    new_client,
)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"rate_limit_auth": GENEROUS_AUTH_RATE}


@pytest.fixture
async def admin(app: FastAPI, client: httpx.AsyncClient) -> SignedIn:
    return await login(client, await create_staff(app, role="admin"))


def _new_user(role: str = "editor") -> dict[str, str]:
    return {
        "email": f"New.{secrets.token_hex(4)}@Example.test",
        "name": "New Person",
        "password": "a long enough password",
        "role": role,
    }


async def test_admin_creates_and_lists_users_of_their_organisation(
    app: FastAPI, client: httpx.AsyncClient, admin: SignedIn
) -> None:
    body = _new_user()
    created = await client.post("/api/users", json=body, headers=admin.csrf_headers)
    assert created.status_code == 201, created.text
    user = created.json()
    assert set(user) == {"id", "email", "name", "role", "organizationId"}
    assert user["email"] == body["email"].lower()
    assert user["organizationId"] == admin.staff.organization_id
    assert "password" not in created.text
    other_org_user = await create_staff(app)
    listed = (await client.get("/api/users")).json()["users"]
    ids = {u["id"] for u in listed}
    assert {admin.staff.id, user["id"]} <= ids
    assert other_org_user.id not in ids
    events = [
        e
        async for e in _audit(app, "user.created")
        if e.resource_id == user["id"] and e.actor_id == admin.staff.id
    ]
    assert len(events) == 1
    # The new user can sign in.
    async with new_client(app) as fresh:
        response = await fresh.post(
            "/api/auth/session-login", json={"email": body["email"], "password": body["password"]}
        )
        assert response.status_code == 200


async def _audit(app: FastAPI, action: str) -> AsyncIterator[AuditEventRow]:
    async with app.state.hf.db.sessions() as session:
        rows = (
            (await session.execute(select(AuditEventRow).where(AuditEventRow.action == action)))
            .scalars()
            .all()
        )
    for row in rows:
        yield row


async def test_create_validation_and_duplicates(client: httpx.AsyncClient, admin: SignedIn) -> None:
    headers = admin.csrf_headers
    for broken in (
        {**_new_user(), "email": "not-an-email"},
        {**_new_user(), "role": "superuser"},
        {**_new_user(), "password": "short"},
        {"email": "x@y.test"},
    ):
        response = await client.post("/api/users", json=broken, headers=headers)
        assert response.status_code == 422, broken
        assert response.json()["code"] == "validation_error"
    duplicate = {**_new_user(), "email": admin.staff.email.upper()}
    response = await client.post("/api/users", json=duplicate, headers=headers)
    assert response.status_code == 409
    assert response.json()["code"] == "email_taken"


@pytest.mark.parametrize("role", ["editor", "viewer"])
async def test_non_admins_are_forbidden(app: FastAPI, client: httpx.AsyncClient, role: str) -> None:
    signed = await login(client, await create_staff(app, role=role))
    assert (await client.get("/api/users")).status_code == 403
    response = await client.post("/api/users", json=_new_user(), headers=signed.csrf_headers)
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"
    patched = await client.patch(
        f"/api/users/{signed.staff.id}", json={"role": "admin"}, headers=signed.csrf_headers
    )
    assert patched.status_code == 403


async def test_another_organisations_user_is_not_found(
    app: FastAPI, client: httpx.AsyncClient, admin: SignedIn
) -> None:
    foreign = await create_staff(app)
    async with new_client(app) as foreign_browser:
        await login(foreign_browser, foreign)
        for body in ({"disabled": True}, {"role": "viewer"}, {"name": "Hijacked"}):
            response = await client.patch(
                f"/api/users/{foreign.id}", json=body, headers=admin.csrf_headers
            )
            assert response.status_code == 404
            assert response.json() == {"error": "Not found.", "code": "not_found"}
        missing = await client.patch(
            "/api/users/usr_doesnotexist", json={"name": "x"}, headers=admin.csrf_headers
        )
        assert missing.status_code == 404
        assert (await foreign_browser.get("/api/auth/me")).status_code == 200
    async with app.state.hf.db.sessions() as session:
        row = await session.get(User, foreign.id)
        assert row is not None and not row.disabled and row.name == "Test Staff"


async def test_disabling_a_user_ends_their_sessions_within_one_request(
    app: FastAPI, client: httpx.AsyncClient, admin: SignedIn, redis_client: Redis, redis_prefix: str
) -> None:
    victim = await create_staff(app, organization=admin.staff.organization_name, role="editor")
    async with new_client(app) as phone, new_client(app) as laptop:
        await login(phone, victim)
        await login(laptop, victim)
        response = await client.patch(
            f"/api/users/{victim.id}", json={"disabled": True}, headers=admin.csrf_headers
        )
        assert response.status_code == 200
        assert response.json()["id"] == victim.id
        # The very next request of each of their browsers is refused.
        assert (await phone.get("/api/auth/me")).status_code == 401
        assert (await laptop.get("/api/auth/me")).status_code == 401
        keys = [k async for k in redis_client.scan_iter(match=f"{redis_prefix}*{victim.id}*")]
        assert not [k for k in keys if b"session" in k or b"csrf" in k]
        again = await phone.post(
            "/api/auth/session-login", json={"email": victim.email, "password": victim.password}
        )
        assert again.status_code == 401
    assert [e async for e in _audit(app, "user.disabled") if e.resource_id == victim.id]


async def test_password_or_role_change_ends_sessions_and_the_new_password_works(
    app: FastAPI, client: httpx.AsyncClient, admin: SignedIn
) -> None:
    victim = await create_staff(app, organization=admin.staff.organization_name)
    async with new_client(app) as browser:
        await login(browser, victim)
        response = await client.patch(
            f"/api/users/{victim.id}",
            json={"password": "a brand new password"},
            headers=admin.csrf_headers,
        )
        assert response.status_code == 200
        assert (await browser.get("/api/auth/me")).status_code == 401
        old = await browser.post(
            "/api/auth/session-login", json={"email": victim.email, "password": DEFAULT_PASSWORD}
        )
        assert old.status_code == 401
        new = await browser.post(
            "/api/auth/session-login",
            json={"email": victim.email, "password": "a brand new password"},
        )
        assert new.status_code == 200
        assert new.json()["user"]["role"] == "admin"
        demoted = await client.patch(
            f"/api/users/{victim.id}", json={"role": "viewer"}, headers=admin.csrf_headers
        )
        assert demoted.json()["role"] == "viewer"
        assert (await browser.get("/api/auth/me")).status_code == 401


async def test_an_admin_cannot_disable_or_demote_themselves(
    client: httpx.AsyncClient, admin: SignedIn
) -> None:
    for body in ({"disabled": True}, {"role": "viewer"}):
        response = await client.patch(
            f"/api/users/{admin.staff.id}", json=body, headers=admin.csrf_headers
        )
        assert response.status_code == 409
    assert (await client.get("/api/auth/me")).status_code == 200


def test_cli_user_create_makes_the_organisation_once(
    fresh_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", fresh_database_url)
    monkeypatch.setenv("HEALTHFORMS_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()
    args = ["user", "create", "--password", "cli password 1", "--name", "Dr Who"]
    first = runner.invoke(
        cli_app,
        [*args, "--email", "Admin@Clinic.test", "--role", "admin", "--organization", "Clinic X"],
    )
    assert first.exit_code == 0, first.output
    assert "created organisation" in first.output
    second = runner.invoke(
        cli_app,
        [*args, "--email", "ed@clinic.test", "--role", "editor", "--organization", "Clinic X"],
    )
    assert second.exit_code == 0, second.output
    assert "existing organisation" in second.output
    duplicate = runner.invoke(
        cli_app,
        [*args, "--email", "admin@clinic.test", "--role", "admin", "--organization", "Clinic X"],
    )
    assert duplicate.exit_code == 1
    bad_role = runner.invoke(
        cli_app,
        [*args, "--email", "z@clinic.test", "--role", "boss", "--organization", "Clinic X"],
    )
    assert bad_role.exit_code == 2

    async def check() -> None:
        db = Database.connect(fresh_database_url)
        try:
            async with db.sessions() as session:
                orgs = (await session.execute(select(Organization))).scalars().all()
                users = (await session.execute(select(User))).scalars().all()
        finally:
            await db.dispose()
        assert [o.name for o in orgs] == ["Clinic X"]
        assert sorted(u.email for u in users) == ["admin@clinic.test", "ed@clinic.test"]
        admin_row = next(u for u in users if u.role == "admin")
        assert admin_row.password_hash and admin_row.password_hash.startswith("$argon2id$")
        assert verify_password_sync(admin_row.password_hash, "cli password 1")

    asyncio.run(check())


async def test_changing_ones_own_password_ends_every_other_session(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    staff = await create_staff(app, role="viewer")
    signed = await login(client, staff)
    async with new_client(app) as other_browser:
        await login(other_browser, staff)
        wrong = await client.post(
            "/api/auth/password",
            json={"currentPassword": "not it at all", "newPassword": "another new password"},
            headers=signed.csrf_headers,
        )
        assert wrong.status_code == 401
        changed = await client.post(
            "/api/auth/password",
            json={"currentPassword": staff.password, "newPassword": "another new password"},
            headers=signed.csrf_headers,
        )
        assert changed.status_code == 200, changed.text
        assert (await other_browser.get("/api/auth/me")).status_code == 401
        # This browser carries on with a fresh session and token; the old cookie is dead.
        assert (await client.get("/api/auth/me")).status_code == 200
        fresh_token = changed.json()["csrfToken"]
        assert fresh_token != signed.csrf_token
        async with new_client(app) as replay:
            replay.cookies.set("session", signed.cookie)
            assert (await replay.get("/api/auth/me")).status_code == 401
        relogin = await other_browser.post(
            "/api/auth/session-login",
            json={"email": staff.email, "password": "another new password"},
        )
        assert relogin.status_code == 200


def test_cli_user_create_on_the_embedded_default_migrates_and_creates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The README's first-admin step: no DATABASE_URL, nothing migrated yet.
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("HEALTHFORMS_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(
        cli_app,
        [
            "user", "create", "--email", "first@clinic.test", "--password", "first password 1",
            "--name", "First Admin", "--role", "admin", "--organization", "Fresh Clinic",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "healthforms.db").exists()


async def test_an_admin_cannot_set_their_own_password_without_the_old_one(
    app: FastAPI, client: httpx.AsyncClient, admin: SignedIn
) -> None:
    # A held admin session (an unlocked screen) must not take the account over.
    response = await client.patch(
        f"/api/users/{admin.staff.id}",
        json={"password": "a takeover password"},
        headers=admin.csrf_headers,
    )
    assert response.status_code == 403
    assert response.json()["code"] == "reauthentication_required"
    async with new_client(app) as other:
        still = await other.post(
            "/api/auth/session-login",
            json={"email": admin.staff.email, "password": admin.staff.password},
        )
        assert still.status_code == 200


async def test_wrong_current_passwords_count_toward_the_lockout(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    staff = await create_staff(app, role="viewer")
    signed = await login(client, staff)
    for i in range(LOGIN_FAILURE_LIMIT):
        wrong = await client.post(
            "/api/auth/password",
            json={"currentPassword": "guess guess guess", "newPassword": "another new password"},
            headers=signed.csrf_headers,
        )
        assert wrong.status_code == (429 if i == LOGIN_FAILURE_LIMIT - 1 else 401)
    # The account is now locked: even the right password does not sign in, nor change it.
    async with new_client(app) as other:
        locked = await other.post(
            "/api/auth/session-login", json={"email": staff.email, "password": staff.password}
        )
        assert locked.status_code == 429 and locked.json()["code"] == "account_locked"
    right = await client.post(
        "/api/auth/password",
        json={"currentPassword": staff.password, "newPassword": "another new password"},
        headers=signed.csrf_headers,
    )
    assert right.status_code == 429 and right.json()["code"] == "account_locked"
    events = [e async for e in _audit(app, "auth.account_locked") if e.resource_id == staff.id]
    assert len(events) == 1
