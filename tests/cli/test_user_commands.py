"""`healthforms user reset-password | reset-totp` (issue 12 item 8): the lone admin who
lost a phone or a password gets back in from the shell; every session of the account
ends, durably, and the reset is audited with no actor."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from typer.testing import CliRunner, Result

from healthforms.audit.models import AuditEventRow
from healthforms.cli import app as cli_app
from healthforms.config import Settings
from healthforms.identity.login import LOGIN_FAILURE_LIMIT
from healthforms.identity.models import TotpRecoveryCode, User
from healthforms.redis.embedded import free_port
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.support.identity import GENEROUS_AUTH_RATE, Staff, create_staff, login, new_client

GENERATED = re.compile(r"new password \(shown once, pass it on privately\): (\S+)")


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"rate_limit_auth": GENEROUS_AUTH_RATE}


def _env(settings: Settings, tmp_path: Path, redis_url: str | None = None) -> dict[str, str]:
    """The service's own configuration, as an operator's shell on its host has it."""
    assert settings.database_url is not None and settings.redis_url is not None
    return {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": redis_url or settings.redis_url.get_secret_value(),
        "HEALTHFORMS_REDIS_PREFIX": settings.redis_prefix,
        "HEALTHFORMS_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
        "HEALTHFORMS_DATA_DIR": str(tmp_path / "cli-data"),
        "HEALTHFORMS_ENV": "development",
        "HEALTHFORMS_LOG_LEVEL": "warning",
    }


async def _run(env: dict[str, str], *args: str) -> Result:
    # The command runs its own event loop: give it a thread, as a shell would a process.
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, cli_app, ["user", *args], env=env)


async def _audit(app: FastAPI, action: str, resource_id: str) -> list[AuditEventRow]:
    async with app.state.hf.db.sessions() as session:
        rows = await session.execute(
            select(AuditEventRow)
            .where(AuditEventRow.action == action)
            .where(AuditEventRow.resource_id == resource_id)
        )
        return list(rows.scalars().all())


async def _sign_in(http: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await http.post("/api/auth/session-login", json={"email": email, "password": password})


async def test_reset_password_generates_one_prints_it_once_and_ends_every_session(
    app: FastAPI, settings: Settings, tmp_path: Path
) -> None:
    staff = await create_staff(app, role="admin")
    async with new_client(app) as laptop:
        await login(laptop, staff)
        assert (await laptop.get("/api/auth/me")).status_code == 200
        result = await _run(_env(settings, tmp_path), "reset-password", "--email", staff.email)
        assert result.exit_code == 0, result.output
        found = GENERATED.findall(result.output)
        assert len(found) == 1
        generated = found[0]
        assert len(generated) >= 16 and result.output.count(generated) == 1
        assert f"user {staff.id}: password reset; every session ended" in result.output
        # Ended at once (the command reached Redis too), and the old password is dead.
        assert (await laptop.get("/api/auth/me")).status_code == 401
        assert (await _sign_in(laptop, staff.email, staff.password)).status_code == 401
        assert (await _sign_in(laptop, staff.email, generated)).status_code == 200
    events = await _audit(app, "user.password_reset", staff.id)
    assert [(e.actor_id, e.organization_id) for e in events] == [(None, staff.organization_id)]
    assert await _audit(app, "session.revoked", staff.id)
    assert all(generated not in str(vars(e)) for e in events)


async def test_reset_password_with_a_typed_password_prints_none(
    app: FastAPI, settings: Settings, tmp_path: Path
) -> None:
    staff = await create_staff(app)
    env = _env(settings, tmp_path)
    result = await _run(env, "reset-password", "--email", staff.email, "--password", "typed one 1")
    assert result.exit_code == 0, result.output
    assert "typed one 1" not in result.output and not GENERATED.search(result.output)
    async with new_client(app) as browser:
        assert (await _sign_in(browser, staff.email, "typed one 1")).status_code == 200
    short = await _run(env, "reset-password", "--email", staff.email, "--password", "short")
    assert short.exit_code == 2
    bad = await _run(env, "reset-password", "--email", "not-an-email", "--password", "long enough")
    assert bad.exit_code == 2
    unknown = await _run(env, "reset-totp", "--email", "nobody-at-all@example.test")
    assert unknown.exit_code == 1 and "no user with this email" in unknown.output


async def test_reset_totp_removes_the_code_and_recovery_codes_and_lifts_the_lock(
    app: FastAPI, settings: Settings, tmp_path: Path
) -> None:
    staff = await create_staff(app, role="admin")
    async with new_client(app) as phone:
        signed = await login(phone, staff)
        started = await phone.post(
            "/api/auth/totp/enrol",
            json={"currentPassword": staff.password},
            headers=signed.csrf_headers,
        )
        secret = started.json()["secret"]
        confirmed = await phone.post(
            "/api/auth/totp/confirm",
            json={"code": pyotp.TOTP(secret).now()},
            headers=signed.csrf_headers,
        )
        assert confirmed.status_code == 200
        # The phone is lost: guesses at the code lock the account.
        for _ in range(LOGIN_FAILURE_LIMIT):
            await phone.post(
                "/api/auth/session-login",
                json={"email": staff.email, "password": staff.password, "totp": "123456"},
            )
        assert (await _sign_in(phone, staff.email, staff.password)).status_code == 429
        result = await _run(_env(settings, tmp_path), "reset-totp", "--email", staff.email)
        assert result.exit_code == 0, result.output
        assert "two-step sign-in removed; every session ended" in result.output
        assert (await phone.get("/api/auth/me")).status_code == 401
        assert (await _sign_in(phone, staff.email, staff.password)).status_code == 200
    async with app.state.hf.db.sessions() as session:
        row = await session.get(User, staff.id)
        assert row is not None and not row.totp_enabled and row.totp_secret_encrypted is None
        codes = await session.execute(
            select(TotpRecoveryCode).where(TotpRecoveryCode.user_id == staff.id)
        )
        assert codes.scalars().all() == []
    events = await _audit(app, "user.totp_reset", staff.id)
    assert [e.actor_id for e in events] == [None]


async def test_an_email_in_several_organisations_needs_organization(
    app: FastAPI, settings: Settings, tmp_path: Path
) -> None:
    first = await create_staff(app)
    second = await create_staff(app, email=first.email)
    env = _env(settings, tmp_path)
    ambiguous = await _run(env, "reset-password", "--email", first.email, "--password", "x" * 12)
    assert ambiguous.exit_code == 1
    assert "--organization" in ambiguous.output
    assert first.organization_name in ambiguous.output
    chosen = await _run(
        env,
        "reset-password",
        "--email",
        first.email,
        "--password",
        "second clinic new",
        "--organization",
        second.organization_name,
    )
    assert chosen.exit_code == 0, chosen.output
    assert second.id in chosen.output
    async with new_client(app) as browser:
        signed = await _sign_in(browser, first.email, "second clinic new")
        assert signed.json()["user"]["id"] == second.id
        assert (await _sign_in(browser, first.email, first.password)).status_code == 200


async def test_sessions_end_from_the_database_record_when_redis_is_away(
    app: FastAPI, settings: Settings, tmp_path: Path
) -> None:
    staff: Staff = await create_staff(app)
    async with new_client(app) as laptop:
        await login(laptop, staff)
        assert (await laptop.get("/api/auth/me")).status_code == 200
        dead_redis = f"redis://127.0.0.1:{free_port()}/0"
        result = await _run(
            _env(settings, tmp_path, redis_url=dead_redis),
            "reset-password",
            "--email",
            staff.email,
            "--password",
            "while redis was away",
        )
        assert result.exit_code == 0, result.output
        assert "Redis did not answer" in result.output
        # The running service (its Redis up) re-reads the database's record of the
        # user within seconds, and the session is refused from then on.
        deadline = time.monotonic() + 15
        status = 200
        while time.monotonic() < deadline and status == 200:
            await asyncio.sleep(0.5)
            status = (await laptop.get("/api/auth/me")).status_code
        assert status == 401
