"""Account recovery (issue 12 items 8 and 9): an admin resets another user's password or
two-step sign-in; recovery codes at enrolment (hashed, single use, counted,
regenerated); the enrolment QR code; TOTP enrolment, removal and new codes only with the
current password, a wrong one counting toward the lock."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from typing import Any
from urllib.parse import unquote

import httpx
import pyotp
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from healthforms.audit.models import AuditEventRow
from healthforms.identity.login import LOGIN_FAILURE_LIMIT
from healthforms.identity.models import TotpRecoveryCode, User
from healthforms.identity.totp import open_secret
from tests.support.identity import (
    GENEROUS_AUTH_RATE,
    SignedIn,
    Staff,
    create_staff,
    login,
    new_client,
)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"rate_limit_auth": GENEROUS_AUTH_RATE}


async def _audit(app: FastAPI, action: str, resource_id: str) -> list[AuditEventRow]:
    async with app.state.hf.db.sessions() as session:
        rows = await session.execute(
            select(AuditEventRow)
            .where(AuditEventRow.action == action)
            .where(AuditEventRow.resource_id == resource_id)
        )
        return list(rows.scalars().all())


async def _sign_in(http: httpx.AsyncClient, staff: Staff, **extra: Any) -> httpx.Response:
    return await http.post(
        "/api/auth/session-login",
        json={"email": staff.email, "password": staff.password, **extra},
    )


async def enrol(http: httpx.AsyncClient, signed: SignedIn) -> tuple[str, list[str]]:
    """Turn TOTP on for a signed-in user: (secret, recovery codes)."""
    started = await http.post(
        "/api/auth/totp/enrol",
        json={"currentPassword": signed.staff.password},
        headers=signed.csrf_headers,
    )
    assert started.status_code == 200, started.text
    secret: str = started.json()["secret"]
    confirmed = await http.post(
        "/api/auth/totp/confirm",
        json={"code": pyotp.TOTP(secret).now()},
        headers=signed.csrf_headers,
    )
    assert confirmed.status_code == 200, confirmed.text
    codes: list[str] = confirmed.json()["recoveryCodes"]
    assert confirmed.headers["cache-control"] == "no-store"
    return secret, codes


# --- Admin resets ---------------------------------------------------------------------


async def test_admin_resets_a_users_password_generated_and_shown_once(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    admin = await login(client, await create_staff(app, role="admin"))
    victim = await create_staff(app, organization=admin.staff.organization_name, role="editor")
    async with new_client(app) as phone:
        await login(phone, victim)
        reset = await client.post(
            f"/api/users/{victim.id}/reset-password", json={}, headers=admin.csrf_headers
        )
        assert reset.status_code == 200, reset.text
        body = reset.json()
        assert body["user"]["id"] == victim.id
        generated = body["password"]
        assert len(generated) >= 16
        assert reset.headers["cache-control"] == "no-store"  # shown once, kept nowhere
        # Their sessions ended at once; the old password is dead, the new one works.
        assert (await phone.get("/api/auth/me")).status_code == 401
        assert (await _sign_in(phone, victim)).status_code == 401
        fresh = await phone.post(
            "/api/auth/session-login", json={"email": victim.email, "password": generated}
        )
        assert fresh.status_code == 200
    events = await _audit(app, "user.password_reset", victim.id)
    assert [(e.actor_id, e.organization_id) for e in events] == [
        (admin.staff.id, admin.staff.organization_id)
    ]
    assert generated not in str([vars(e) for e in events])
    assert await _audit(app, "session.revoked", victim.id)


async def test_admin_typed_password_is_not_echoed(app: FastAPI, client: httpx.AsyncClient) -> None:
    admin = await login(client, await create_staff(app, role="admin"))
    victim = await create_staff(app, organization=admin.staff.organization_name)
    reset = await client.post(
        f"/api/users/{victim.id}/reset-password",
        json={"password": "typed by the admin"},
        headers=admin.csrf_headers,
    )
    assert reset.status_code == 200
    assert "password" not in reset.json()
    short = await client.post(
        f"/api/users/{victim.id}/reset-password",
        json={"password": "short"},
        headers=admin.csrf_headers,
    )
    assert short.status_code == 422
    async with new_client(app) as browser:
        ok = await browser.post(
            "/api/auth/session-login",
            json={"email": victim.email, "password": "typed by the admin"},
        )
        assert ok.status_code == 200


async def test_admin_resets_two_step_of_a_user_who_lost_their_phone(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    admin = await login(client, await create_staff(app, role="admin"))
    victim = await create_staff(app, organization=admin.staff.organization_name)
    async with new_client(app) as phone:
        await enrol(phone, await login(phone, victim))
        asked = await _sign_in(phone, victim)
        assert asked.json()["code"] == "totp_required"
        reset = await client.post(f"/api/users/{victim.id}/reset-totp", headers=admin.csrf_headers)
        assert reset.status_code == 200, reset.text
        # Every session ended; the password alone signs in again.
        assert (await phone.get("/api/auth/me")).status_code == 401
        assert (await _sign_in(phone, victim)).status_code == 200
    async with app.state.hf.db.sessions() as session:
        row = await session.get(User, victim.id)
        assert row is not None and not row.totp_enabled and row.totp_secret_encrypted is None
        left = await session.execute(
            select(TotpRecoveryCode).where(TotpRecoveryCode.user_id == victim.id)
        )
        assert left.scalars().all() == []
    events = await _audit(app, "user.totp_reset", victim.id)
    assert [e.actor_id for e in events] == [admin.staff.id]


async def test_resets_are_for_admins_of_the_same_clinic_and_never_oneself(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    admin = await login(client, await create_staff(app, role="admin"))
    foreign = await create_staff(app, role="editor")  # another clinic
    for path in ("reset-password", "reset-totp"):
        own = await client.post(f"/api/users/{admin.staff.id}/{path}", headers=admin.csrf_headers)
        assert own.status_code == 403 and own.json()["code"] == "reauthentication_required"
        other = await client.post(f"/api/users/{foreign.id}/{path}", headers=admin.csrf_headers)
        assert other.status_code == 404 and other.json()["code"] == "not_found"
        no_csrf = await client.post(f"/api/users/{foreign.id}/{path}")
        assert no_csrf.status_code == 403 and no_csrf.json()["code"] == "csrf_invalid"
    async with new_client(app) as editor_browser:
        editor = await create_staff(app, organization=admin.staff.organization_name, role="editor")
        signed = await login(editor_browser, editor)
        refused = await editor_browser.post(
            f"/api/users/{admin.staff.id}/reset-password", headers=signed.csrf_headers
        )
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    # Nothing changed: the foreign user and the admin still sign in as before.
    async with new_client(app) as browser:
        assert (await _sign_in(browser, foreign)).status_code == 200
        assert (await _sign_in(browser, admin.staff)).status_code == 200


async def test_an_admin_reset_lifts_the_sign_in_lock(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    admin = await login(client, await create_staff(app, role="admin"))
    victim = await create_staff(app, organization=admin.staff.organization_name)
    async with new_client(app) as browser:
        for _ in range(LOGIN_FAILURE_LIMIT):
            await browser.post(
                "/api/auth/session-login", json={"email": victim.email, "password": "guess!guess"}
            )
        assert (await _sign_in(browser, victim)).json()["code"] == "account_locked"
        reset = await client.post(
            f"/api/users/{victim.id}/reset-password",
            json={"password": "a fresh start 1"},
            headers=admin.csrf_headers,
        )
        assert reset.status_code == 200
        again = await browser.post(
            "/api/auth/session-login", json={"email": victim.email, "password": "a fresh start 1"}
        )
        assert again.status_code == 200


# --- Recovery codes -------------------------------------------------------------------


async def test_enrolment_gives_ten_single_use_recovery_codes_stored_hashed(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    staff = await create_staff(app)
    secret, codes = await enrol(client, await login(client, staff))
    assert len(codes) == 10 and len(set(codes)) == 10
    async with app.state.hf.db.sessions() as session:
        stored = (
            (
                await session.execute(
                    select(TotpRecoveryCode.code_hash).where(TotpRecoveryCode.user_id == staff.id)
                )
            )
            .scalars()
            .all()
        )
    assert len(stored) == 10
    for code in codes:
        assert code not in stored and code.replace("-", "") not in stored
    # Plain SHA-256 over (user id, code): what the model says is kept, and nothing else.
    expected = hashlib.sha256(f"{staff.id}:{codes[0].replace('-', '')}".encode()).hexdigest()
    assert expected in stored

    async with new_client(app) as browser:
        # Typed in the sign-in's `totp` field, in any case, with or without hyphens.
        used = await _sign_in(browser, staff, totp=codes[0].upper().replace("-", " "))
        assert used.status_code == 200, used.text
    async with new_client(app) as browser:
        again = await _sign_in(browser, staff, totp=codes[0])
        assert again.status_code == 401 and again.json()["code"] == "invalid_credentials"
        made_up = await _sign_in(browser, staff, totp="abcd-efgh-jkmn-pqrs")
        assert made_up.status_code == 401
    events = await _audit(app, "auth.recovery_code_used", staff.id)
    assert len(events) == 1 and events[0].actor_id == staff.id
    status = await client.get("/api/auth/totp")
    assert status.json() == {"totpEnabled": True, "recoveryCodesLeft": 9}
    page = await client.get("/account", headers={"Accept": "text/html"})
    assert "Recovery codes left: <strong>9</strong>" in page.text
    assert secret not in page.text


async def test_new_recovery_codes_need_the_password_and_replace_the_old(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    staff = await create_staff(app)
    signed = await login(client, staff)
    _, old_codes = await enrol(client, signed)
    wrong = await client.post(
        "/api/auth/totp/recovery-codes",
        json={"currentPassword": "not my password"},
        headers=signed.csrf_headers,
    )
    assert wrong.status_code == 401 and wrong.json()["code"] == "invalid_credentials"
    missing = await client.post(
        "/api/auth/totp/recovery-codes", json={}, headers=signed.csrf_headers
    )
    assert missing.status_code == 422
    fresh = await client.post(
        "/api/auth/totp/recovery-codes",
        json={"currentPassword": staff.password},
        headers=signed.csrf_headers,
    )
    assert fresh.status_code == 200
    new_codes = fresh.json()["recoveryCodes"]
    assert len(new_codes) == 10 and not set(new_codes) & set(old_codes)
    async with new_client(app) as browser:
        assert (await _sign_in(browser, staff, totp=old_codes[1])).status_code == 401
        assert (await _sign_in(browser, staff, totp=new_codes[1])).status_code == 200
    assert await _audit(app, "auth.recovery_codes_regenerated", staff.id)


async def test_a_recovery_code_is_used_once_when_two_sign_ins_race(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    staff = await create_staff(app)
    _, codes = await enrol(client, await login(client, staff))
    async with new_client(app) as one, new_client(app) as two:
        first, second = await asyncio.gather(
            _sign_in(one, staff, totp=codes[2]), _sign_in(two, staff, totp=codes[2])
        )
    assert sorted([first.status_code, second.status_code]) == [200, 401]


# --- QR code --------------------------------------------------------------------------


async def test_enrolment_qr_code_is_an_svg_drawn_by_the_service(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    staff = await create_staff(app)
    signed = await login(client, staff)
    started = await client.post(
        "/api/auth/totp/enrol",
        json={"currentPassword": staff.password},
        headers=signed.csrf_headers,
    )
    body = started.json()
    qr: str = body["qrCode"]
    assert qr.startswith("data:image/svg+xml")
    svg = unquote(qr.split(",", 1)[1]) if ";base64" not in qr else base64.b64decode(qr).decode()
    assert "<svg" in svg and "<path" in svg
    assert "http" not in svg.replace("http://www.w3.org/2000/svg", "")  # no third-party host
    # The page's CSP lets a data: image show (img-src) and nothing else is needed.
    page = await client.get("/account", headers={"Accept": "text/html"})
    csp = page.headers["content-security-policy"]
    img_src = next(d for d in csp.split(";") if d.strip().startswith("img-src"))
    assert "data:" in img_src
    assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]


# --- Re-authentication for two-step changes -------------------------------------------


async def test_totp_enrolment_and_removal_need_the_current_password(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    staff = await create_staff(app)
    signed = await login(client, staff)
    for body in ({}, {"currentPassword": "wrong password"}):
        refused = await client.post("/api/auth/totp/enrol", json=body, headers=signed.csrf_headers)
        assert refused.status_code in (401, 422), body
    no_body = await client.post("/api/auth/totp/enrol", headers=signed.csrf_headers)
    assert no_body.status_code == 422
    async with app.state.hf.db.sessions() as session:
        row = await session.get(User, staff.id)
        assert row is not None and row.totp_secret_encrypted is None
    secret, _ = await enrol(client, signed)
    wrong = await client.post(
        "/api/auth/totp/disable",
        json={"currentPassword": "wrong password"},
        headers=signed.csrf_headers,
    )
    assert wrong.status_code == 401
    assert (await client.get("/api/auth/totp")).json()["totpEnabled"] is True
    off = await client.post(
        "/api/auth/totp/disable",
        json={"currentPassword": staff.password},
        headers=signed.csrf_headers,
    )
    assert off.status_code == 200
    assert (await client.get("/api/auth/totp")).json() == {
        "totpEnabled": False,
        "recoveryCodesLeft": 0,
    }
    assert await _audit(app, "auth.totp_disabled", staff.id)
    async with new_client(app) as browser:
        assert (await _sign_in(browser, staff)).status_code == 200
    assert pyotp.TOTP(secret).now()  # the old secret is simply unused now


async def test_wrong_passwords_at_totp_enrolment_count_toward_the_lock(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    staff = await create_staff(app)
    signed = await login(client, staff)
    answers = []
    for _ in range(LOGIN_FAILURE_LIMIT):
        response = await client.post(
            "/api/auth/totp/enrol",
            json={"currentPassword": "a guess of mine"},
            headers=signed.csrf_headers,
        )
        answers.append(response.status_code)
    assert answers == [401] * (LOGIN_FAILURE_LIMIT - 1) + [429]
    # Locked exactly like a sign-in: the right password neither enrols nor signs in.
    right = await client.post(
        "/api/auth/totp/enrol",
        json={"currentPassword": staff.password},
        headers=signed.csrf_headers,
    )
    assert right.status_code == 429 and right.json()["code"] == "account_locked"
    async with new_client(app) as browser:
        assert (await _sign_in(browser, staff)).json()["code"] == "account_locked"
    assert len(await _audit(app, "auth.account_locked", staff.id)) == 1


async def test_a_stolen_session_cannot_turn_two_step_off(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    staff = await create_staff(app)
    signed = await login(client, staff)
    await enrol(client, signed)
    for path in ("/api/auth/totp/disable", "/api/auth/totp/recovery-codes"):
        response = await client.post(path, json={}, headers=signed.csrf_headers)
        assert response.status_code == 422, path
    assert (await client.get("/api/auth/totp")).json()["recoveryCodesLeft"] == 10
    code = pyotp.TOTP(await _secret_of(app, staff.id)).at(time.time() + 30)
    async with new_client(app) as browser:
        assert (await _sign_in(browser, staff, totp=code)).status_code == 200


async def _secret_of(app: FastAPI, user_id: str) -> str:
    async with app.state.hf.db.sessions() as session:
        row = await session.get(User, user_id)
        assert row is not None
        secret = open_secret(app.state.hf.keys, user_id, row.totp_secret_encrypted)
        assert secret is not None
        return secret
