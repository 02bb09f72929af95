"""A real server process and Debian's Chromium (never a downloaded browser) for page tests."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import TEST_ENCRYPTION_KEY
from tests.support.servers import REPO_ROOT, ServerProcess, start_server
from tests.support.smtp import SmtpServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = REPO_ROOT / "artifacts" / "screenshots"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def web_prefix(redis_url: str) -> Iterator[str]:
    prefix = f"hft:web:{secrets.token_hex(5)}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(scope="module")
def mailbox() -> Iterator[SmtpServer]:
    """The SMTP server the module's service sends its alerts and patient emails to."""
    with SmtpServer.running() as smtp:
        yield smtp


@pytest.fixture(scope="module")
def server(
    database_url: str,
    redis_url: str,
    web_prefix: str,
    tmp_path_factory: pytest.TempPathFactory,
    mailbox: SmtpServer,
    request: pytest.FixtureRequest,
) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("web-data")
    env = {
        **mailbox.env(),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "HEALTHFORMS_REDIS_PREFIX": web_prefix,
        "HEALTHFORMS_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
        "HEALTHFORMS_ENV": "development",
        "HEALTHFORMS_DATA_DIR": str(data_dir),
        "HEALTHFORMS_LOG_LEVEL": "warning",
        # One browser run makes more requests than a person would; the limits
        # themselves are tested elsewhere.
        "HEALTHFORMS_RATE_LIMIT_API": "2000/min+100",
        "HEALTHFORMS_RATE_LIMIT_PUBLIC": "2000/min+100",
        "HEALTHFORMS_RATE_LIMIT_AUTH": "200/min+20",
        "HEALTHFORMS_RATE_LIMIT_PDF": "200/min+20",
        # What the test module adds (its SERVER_ENV), e.g. short webhook retries.
        **getattr(request.module, "SERVER_ENV", {}),
    }
    process = start_server(env, data_dir / "logs")
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def api_paths(server: ServerProcess) -> set[str]:
    """Route templates the running server has (features land on main one by one)."""
    response = httpx.get(f"{server.base_url}/openapi.json", timeout=10)
    if response.status_code != 200:
        return set()
    return {_shape(path) for path in response.json().get("paths", {})}


def _shape(path: str) -> str:
    """`/api/forms/{form_id}/lock` -> `/api/forms/{}/lock`: parameter names may differ."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def require_api(api_paths: set[str], *paths: str) -> None:
    """Skip until the API a page needs is on this branch; in CI (everything merged) fail."""
    missing = [p for p in paths if _shape(p) not in api_paths]
    if missing:
        message = f"API not merged yet: {', '.join(missing)}"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing (apt-get install chromium)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()
