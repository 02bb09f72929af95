"""The sign-in, account and users pages without a browser (issue 12 items 8-10): what
each page offers, every input labelled, no inline code, and the scripts they run."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pyotp
import pytest
from fastapi import FastAPI

from healthforms.web.pages import STATIC_DIR
from tests.support.identity import GENEROUS_AUTH_RATE, SignedIn, create_staff, login, new_client

HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"rate_limit_auth": GENEROUS_AUTH_RATE}


def _labelled(html: str) -> None:
    """Every input and select has a <label for> (or an aria-label)."""
    labels = set(re.findall(r'<label for="([^"]+)"', html))
    for tag in re.findall(r"<(?:input|select)\b[^>]*>", html):
        if 'type="hidden"' in tag or "aria-label=" in tag:
            continue
        found = re.search(r'id="([^"]+)"', tag)
        assert found and found.group(1) in labels, tag


def _no_inline_code(html: str) -> None:
    assert "<script>" not in html
    assert not re.search(r"<[a-z][^>]*\son[a-z]+\s*=", html, flags=re.IGNORECASE)
    assert "style=" not in html and "<style" not in html


async def test_sign_in_page_has_no_code_field_until_the_password_was_right(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/login", headers=HTML)
    html = page.text
    _labelled(html)
    _no_inline_code(html)
    # The code step is there but hidden and disabled; nothing offers it up front.
    step = re.search(r'<div class="field" id="totp-step"[^>]*>', html)
    assert step and "hidden" in step.group(0)
    assert "I have an authenticator code" not in html
    assert 'id="totp"' in html and "recovery codes" in html
    script = (STATIC_DIR / "js" / "login.js").read_text()
    # The page shows the code step on the API's `totp_required`, and keeps the password in
    # its own field (never asks the server to echo it back).
    assert 'code === "totp_required"' in script
    assert 'code === "account_locked"' in script and "data.error" in script
    assert "organizationId" in script


async def _admin(app: FastAPI, client: httpx.AsyncClient) -> SignedIn:
    return await login(client, await create_staff(app, role="admin", name="Ada Admin"))


async def test_account_page_offers_a_password_change_and_two_step_behind_the_password(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    signed = await _admin(app, client)
    page = await client.get("/account", headers=HTML)
    assert page.status_code == 200
    html = page.text
    _labelled(html)
    _no_inline_code(html)
    for label in ("Current password", "New password", "New password again"):
        assert f">{label}</label>" in html
    assert 'id="change-password"' in html
    assert 'id="totp-password"' in html  # enrolment asks for the current password
    assert 'id="totp-qr"' in html and "alt=" in html.split('id="totp-qr"')[1].split(">")[0]
    # The change-password API the page uses works as the page calls it.
    changed = await client.post(
        "/api/auth/password",
        json={"currentPassword": signed.staff.password, "newPassword": "a new password here"},
        headers=signed.csrf_headers,
    )
    assert changed.status_code == 200
    assert (await client.get("/account", headers=HTML)).status_code == 200


async def test_account_page_shows_recovery_codes_left_and_their_controls(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    signed = await _admin(app, client)
    started = await client.post(
        "/api/auth/totp/enrol",
        json={"currentPassword": signed.staff.password},
        headers=signed.csrf_headers,
    )
    await client.post(
        "/api/auth/totp/confirm",
        json={"code": pyotp.TOTP(started.json()["secret"]).now()},
        headers=signed.csrf_headers,
    )
    html = (await client.get("/account", headers=HTML)).text
    _labelled(html)
    assert "Recovery codes left: <strong>10</strong> of 10" in html
    assert 'id="recovery-regenerate"' in html and 'id="totp-disable"' in html
    assert 'id="totp-manage-password"' in html
    assert started.json()["secret"] not in html


async def test_users_page_offers_resets_for_others_only(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    signed = await _admin(app, client)
    other = await create_staff(
        app, organization=signed.staff.organization_name, role="viewer", name="Vera Viewer"
    )
    async with new_client(app) as browser:
        member = await login(browser, other)
        started = await browser.post(
            "/api/auth/totp/enrol",
            json={"currentPassword": other.password},
            headers=member.csrf_headers,
        )
        await browser.post(
            "/api/auth/totp/confirm",
            json={"code": pyotp.TOTP(started.json()["secret"]).now()},
            headers=member.csrf_headers,
        )
    html = (await client.get("/admin/users", headers=HTML)).text
    _labelled(html)
    _no_inline_code(html)
    row = html.split(f'data-user-id="{other.id}"')[1].split(">")[0]
    assert 'data-totp="1"' in row
    own = html.split(f'data-user-id="{signed.staff.id}"')[1].split(">")[0]
    assert 'data-totp="0"' in own
    assert 'id="reset-panel"' in html and 'id="reset-password"' in html
    script = (STATIC_DIR / "js" / "admin_users.js").read_text()
    assert "/reset-password" in script and "/reset-totp" in script
    assert "self ?" in script  # no reset controls on one's own row


def test_page_scripts_use_only_the_api_they_need() -> None:
    account = (STATIC_DIR / "js" / "account.js").read_text()
    for path in (
        "/api/auth/password",
        "/api/auth/totp/enrol",
        "/api/auth/totp/confirm",
        "/api/auth/totp/recovery-codes",
        "/api/auth/totp/disable",
    ):
        assert path in account
    assert (
        "innerHTML" not in account
        and "innerHTML" not in (STATIC_DIR / "js" / "admin_users.js").read_text()
    )
