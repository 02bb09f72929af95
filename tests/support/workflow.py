"""Set up what load tests and benchmarks need, through the public contract (API.md).

Everything here goes through `healthforms user create` and the HTTP API, never the
internals, so the drills and the benchmarks exercise what a clinic would. A step whose
feature has not landed yet raises FeatureMissing naming it, so callers can skip with a
reason instead of failing obscurely.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]

PASSWORD = "correct-horse-battery-staple-42"  # noqa: S105 - test fixture only

# A small intake form: one required text field and a consent box.
DRILL_FIELDS: list[dict[str, Any]] = [
    {"id": "full_name", "type": "text", "label": "Full name", "required": True},
    {"id": "reason", "type": "textarea", "label": "Reason for visit", "required": False},
    {"id": "consent", "type": "checkbox", "label": "I consent", "required": True},
]
DRILL_ANSWERS: dict[str, Any] = {
    "full_name": "Test Patient",
    "reason": "Routine check",
    "consent": True,
}

# Limits so high that a load test measures the limiter's cost, never its refusals.
UNLIMITED_RATES = {
    "HEALTHFORMS_RATE_LIMIT_AUTH": "1000000/s+1000000",
    "HEALTHFORMS_RATE_LIMIT_API": "1000000/s+1000000",
    "HEALTHFORMS_RATE_LIMIT_PDF": "1000000/s+1000000",
    "HEALTHFORMS_RATE_LIMIT_PUBLIC": "1000000/s+1000000",
}


class FeatureMissing(RuntimeError):
    """A step needs a feature that is not on this branch yet (the message names it)."""


@dataclass(frozen=True)
class StaffSession:
    """A signed-in staff member: what a browser holds after session-login."""

    email: str
    cookie_name: str
    cookie_value: str
    csrf_token: str
    user_id: str

    @property
    def cookie_header(self) -> str:
        return f"{self.cookie_name}={self.cookie_value}"

    def headers(self, *, unsafe: bool = False) -> dict[str, str]:
        headers = {"Cookie": self.cookie_header}
        if unsafe:
            headers["X-CSRF-Token"] = self.csrf_token
        return headers


@dataclass(frozen=True)
class PublishedForm:
    id: str
    public_id: str


def cli(
    env: Mapping[str, str], *args: str, timeout_s: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run `python -m healthforms ARGS` from this checkout with `env` on top of ours."""
    return subprocess.run(
        [sys.executable, "-m", "healthforms", *args],
        cwd=str(REPO_ROOT),
        env={**os.environ, **env, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def create_admin(
    env: Mapping[str, str], email: str, *, organization: str = "Drill Clinic", name: str = "Admin"
) -> None:
    result = cli(
        env,
        "user",
        "create",
        "--email",
        email,
        "--password",
        PASSWORD,
        "--name",
        name,
        "--role",
        "admin",
        "--organization",
        organization,
    )
    if result.returncode != 0:
        text = result.stdout + result.stderr
        if "No such command" in text:
            raise FeatureMissing("`healthforms user create` (identity)")
        raise RuntimeError(f"user create failed ({result.returncode}): {text[-1500:]}")


def _missing(response: httpx.Response, feature: str) -> None:
    if response.status_code in (404, 405) and response.headers.get("content-type", "").startswith(
        "application/json"
    ):
        if response.json().get("code") in ("not_found", "method_not_allowed", None):
            raise FeatureMissing(feature)


def login(base_url: str, email: str, password: str = PASSWORD) -> StaffSession:
    with httpx.Client(base_url=base_url, timeout=30.0) as http:
        response = http.post("/api/auth/session-login", json={"email": email, "password": password})
        _missing(response, "POST /api/auth/session-login (identity)")
        if response.status_code != 200:
            raise RuntimeError(f"login failed: {response.status_code} {response.text[:300]}")
        body = response.json()
        for name in ("session", "__Host-session"):
            value = response.cookies.get(name)
            if value:
                return StaffSession(
                    email=email,
                    cookie_name=name,
                    cookie_value=value,
                    csrf_token=body["csrfToken"],
                    user_id=str(body["user"]["id"]),
                )
        raise RuntimeError(f"login set no session cookie: {dict(response.headers)}")


def create_user(base_url: str, admin: StaffSession, email: str, role: str = "editor") -> None:
    with httpx.Client(base_url=base_url, timeout=60.0) as http:
        response = http.post(
            "/api/users",
            json={"email": email, "name": "Staff", "password": PASSWORD, "role": role},
            headers=admin.headers(unsafe=True),
        )
        _missing(response, "POST /api/users (identity)")
        if response.status_code != 201:
            raise RuntimeError(f"user create failed: {response.status_code} {response.text[:300]}")


def publish_form(base_url: str, staff: StaffSession, title: str = "Drill intake") -> PublishedForm:
    with httpx.Client(base_url=base_url, timeout=30.0) as http:
        created = http.post(
            "/api/forms",
            json={"title": title, "description": "load test", "fields": DRILL_FIELDS},
            headers=staff.headers(unsafe=True),
        )
        _missing(created, "POST /api/forms (forms)")
        if created.status_code != 201:
            raise RuntimeError(f"form create failed: {created.status_code} {created.text[:300]}")
        form_id = created.json()["id"]
        published = http.post(f"/api/forms/{form_id}/publish", headers=staff.headers(unsafe=True))
        _missing(published, "POST /api/forms/{id}/publish (forms)")
        if published.status_code != 200 or not published.json().get("publicId"):
            raise RuntimeError(f"publish failed: {published.status_code} {published.text[:300]}")
        return PublishedForm(id=form_id, public_id=published.json()["publicId"])


def submit_once(base_url: str, public_id: str) -> str:
    """Fetch the public form and submit it once; return the confirmation."""
    with httpx.Client(base_url=base_url, timeout=30.0) as http:
        fetched = http.get(f"/api/public/forms/{public_id}")
        _missing(fetched, "GET /api/public/forms/{publicId} (submissions)")
        fetched.raise_for_status()
        sent = http.post(
            f"/api/public/forms/{public_id}/responses",
            json={"nonce": fetched.json()["nonce"], "answers": DRILL_ANSWERS},
        )
        _missing(sent, "POST /api/public/forms/{publicId}/responses (submissions)")
        if sent.status_code != 201:
            raise RuntimeError(f"submit failed: {sent.status_code} {sent.text[:300]}")
        return str(sent.json()["confirmation"])


def first_response_id(base_url: str, staff: StaffSession, form_id: str) -> str:
    with httpx.Client(base_url=base_url, timeout=30.0) as http:
        listed = http.get(f"/api/forms/{form_id}/responses", headers=staff.headers())
        _missing(listed, "GET /api/forms/{id}/responses (responses)")
        listed.raise_for_status()
        responses = listed.json()["responses"]
        if not responses:
            raise RuntimeError("no responses listed")
        return str(responses[0]["id"])


def server_env(
    *, database_url: str, redis_url: str, data_dir: Path, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a server process for load tests: explicit stores, no limits."""
    import base64

    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "HEALTHFORMS_DATA_DIR": str(data_dir),
        "HEALTHFORMS_ENCRYPTION_KEY": base64.b64encode(b"k" * 32).decode(),
        "HEALTHFORMS_ENV": "development",
        "HEALTHFORMS_LOG_LEVEL": "info",
        **UNLIMITED_RATES,
    }
    env.update(extra or {})
    return env
