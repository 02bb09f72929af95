"""Staff accounts and signed-in clients for tests of any feature.

staff = await create_staff(app, role="editor")
signed_in = await login(client, staff)          # cookie stays in `client`
await client.post("/api/forms", json=..., headers=signed_in.csrf_headers)
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from healthforms.config import Settings
from healthforms.identity.service import create_user, get_or_create_organization
from healthforms.security.principal import Role

DEFAULT_PASSWORD = "correct horse battery staple"
# Tests sign in many times from one address: keep the per-IP auth policy out of the way.
GENEROUS_AUTH_RATE = "10000/min+1000"


@dataclass(frozen=True)
class Staff:
    id: str
    email: str
    password: str
    organization_id: str
    organization_name: str
    role: Role


@dataclass(frozen=True)
class SignedIn:
    staff: Staff
    csrf_token: str
    cookie: str  # the raw session cookie value
    body: dict[str, Any]

    @property
    def csrf_headers(self) -> dict[str, str]:
        return {"X-CSRF-Token": self.csrf_token}


def identity_settings(
    *, database_url: str, redis_url: str, redis_prefix: str, data_dir: Path, **overrides: Any
) -> Settings:
    from tests.conftest import make_settings

    values: dict[str, Any] = {"rate_limit_auth": GENEROUS_AUTH_RATE}
    values.update(overrides)
    return make_settings(
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        data_dir=data_dir,
        **values,
    )


async def create_staff(
    app: FastAPI,
    *,
    role: Role | str = Role.ADMIN,
    organization: str | None = None,
    email: str | None = None,
    password: str = DEFAULT_PASSWORD,
    name: str = "Test Staff",
) -> Staff:
    """A user (and their organisation, if new) written straight to the app's database."""
    role = Role(role)
    organization = organization or f"Clinic {secrets.token_hex(4)}"
    email = email or f"staff-{secrets.token_hex(5)}@example.test"
    async with app.state.hf.db.sessions() as session:
        org, _ = await get_or_create_organization(session, organization)
        user = await create_user(
            session,
            organization_id=org.id,
            email=email,
            name=name,
            password=password,
            role=role,
        )
    return Staff(
        id=user.id,
        email=email,
        password=password,
        organization_id=org.id,
        organization_name=organization,
        role=role,
    )


async def login(client: httpx.AsyncClient, staff: Staff, **extra: Any) -> SignedIn:
    """Sign in as `staff` (a test's set-up, not its subject). Sign-in answers 503 without
    Redis by design (identity/login.py); on a loaded CI machine one Redis call can miss
    its 0.5 s timeout and open the breaker for a moment, so a 503 is asked again after
    the breaker's back-off, a few times, before the set-up fails."""
    for _ in range(4):
        response = await client.post(
            "/api/auth/session-login",
            json={"email": staff.email, "password": staff.password, **extra},
        )
        if response.status_code != 503:
            break
        await asyncio.sleep(0.5)
    assert response.status_code == 200, response.text
    body = response.json()
    cookie = response.cookies.get("session") or response.cookies.get("__Host-session") or ""
    assert cookie, "login set no session cookie"
    return SignedIn(staff=staff, csrf_token=body["csrfToken"], cookie=cookie, body=body)


def new_client(app: FastAPI, ip: str = "203.0.113.10") -> httpx.AsyncClient:
    """Another browser: its own cookie jar, same app."""
    transport = httpx.ASGITransport(app=app, client=(ip, 40001))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def degraded_decisions(http: httpx.AsyncClient, feature: str, decision: str) -> float:
    """healthforms_degraded_decisions_total{feature, decision} from /metrics (0 if absent)."""
    for line in (await http.get("/metrics")).text.splitlines():
        if line.startswith("healthforms_degraded_decisions_total{") and (
            f'feature="{feature}"' in line and f'decision="{decision}"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
