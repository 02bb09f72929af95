"""Shared fixtures: real Redis-protocol servers and real databases, never fakes."""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from healthforms.app import create_app
from healthforms.config import Settings
from healthforms.redis.embedded import EmbeddedRedis
from tests.support import legs

TEST_ENCRYPTION_KEY = base64.b64encode(b"k" * 32).decode()


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [
        f"healthforms legs: redis={legs.TEST_REDIS} database={legs.TEST_DATABASE.split('@')[-1]}"
    ]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The shared Redis of this run: the leg's external server, or a private Valkey."""
    if legs.redis_is_external():
        yield legs.TEST_REDIS
        return
    with EmbeddedRedis.start(
        tmp_path_factory.mktemp("valkey"), binary=legs.private_server_binary(), appendonly=False
    ) as server:
        yield server.url


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix of this test's own, so runs and tests never see each other's keys."""
    return f"hft:{secrets.token_hex(5)}:"


@pytest.fixture
async def redis_client(redis_url: str, redis_prefix: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        keys = [key async for key in client.scan_iter(match=f"{redis_prefix}*", count=500)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh, migrated database for this test process (xdist worker)."""
    url = legs.create_database(tmp_path_factory.mktemp("db"))
    yield url
    legs.drop_database(url)


@pytest.fixture
def fresh_database_url(tmp_path: Path) -> Iterator[str]:
    """A database of this test alone (for tests that tamper with tables or count rows)."""
    url = legs.create_database(tmp_path / "db")
    yield url
    legs.drop_database(url)


def make_settings(
    *,
    database_url: str | None,
    redis_url: str,
    redis_prefix: str,
    data_dir: Path,
    **overrides: object,
) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "redis_prefix": redis_prefix,
        "data_dir": data_dir,
        "encryption_key": TEST_ENCRYPTION_KEY,
        "env": "development",
        "log_level": "warning",
        # In-process apps share their xdist worker's database: an outbox worker would
        # carry other tests' messages. Tests of the outbox turn it on, each with a
        # database of its own (tests/outbox/).
        "outbox_worker": False,
    }
    if overrides.get("env") == "production":
        # The test servers are plain local ones, as on a private network; production
        # also wants the address browsers use.
        values.update(allow_insecure_redis=True, public_url="https://testserver")
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """What a directory or module changes in its `settings`: override this fixture there
    (returning its overrides), never `settings` itself. Any Settings field, the store
    URLs included, may be overridden."""
    return {}


@pytest.fixture
def settings(
    database_url: str,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
    settings_overrides: dict[str, Any],
) -> Settings:
    """The app's settings: this test's stores and data dir, plus `settings_overrides`."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "redis_prefix": redis_prefix,
        "data_dir": tmp_path / "data",
        **settings_overrides,
    }
    return make_settings(**values)


@pytest.fixture
async def app(settings: Settings, redis_client: Redis) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.10", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis/Valkey of this test alone, of the leg's kind: safe to kill, flush or restart."""
    with EmbeddedRedis.start(
        tmp_path / "private-redis", binary=legs.private_server_binary(), appendonly=False
    ) as server:
        yield server
