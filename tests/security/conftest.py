"""Fixtures of the security tests: a LockService on the leg's Redis and database, apps
with their own settings and clients with chosen peers (rate limits), and an app on a
private Redis of this test alone (to kill or freeze)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from healthforms.app import create_app
from healthforms.config import Settings
from healthforms.db.engine import Database
from healthforms.metrics import Metrics
from healthforms.redis.client import RedisService, build_redis
from healthforms.redis.embedded import EmbeddedRedis
from healthforms.security.locks import LockService
from tests.conftest import make_settings
from tests.support.identity import identity_settings

AppFactory = Callable[..., AbstractAsyncContextManager[FastAPI]]


@pytest.fixture
async def redis_service(
    settings: Settings, redis_url: str, redis_client: Redis
) -> AsyncIterator[RedisService]:
    # redis_client: its teardown deletes this test's prefixed keys.
    service = build_redis(settings, redis_url, embedded=False)
    try:
        yield service
    finally:
        await service.close()


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database.connect(database_url)
    try:
        yield db
    finally:
        await db.dispose()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def locks(redis_service: RedisService, database: Database, metrics: Metrics) -> LockService:
    return LockService(redis_service, database, metrics)


@pytest.fixture
def app_factory(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path, redis_client: Redis
) -> AppFactory:
    """Run create_app with settings overrides (e.g. rate_limit_auth="5/s+2") in its lifespan."""

    @asynccontextmanager
    async def running(**overrides: object) -> AsyncIterator[FastAPI]:
        values: dict[str, object] = {
            "database_url": database_url,
            "redis_url": redis_url,
            "redis_prefix": redis_prefix,
            "data_dir": tmp_path / "data",
        }
        values.update(overrides)
        application = create_app(make_settings(**values))  # type: ignore[arg-type]
        async with application.router.lifespan_context(application):
            yield application

    return running


def client_for(app: FastAPI, peer: str) -> httpx.AsyncClient:
    """An HTTP client whose socket peer is `peer` (what the server sees as the caller)."""
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def private_settings(
    database_url: str, private_redis: EmbeddedRedis, tmp_path: Path, **overrides: Any
) -> Settings:
    """Settings of an app on `private_redis` (the `hf:` prefix: the server is its alone)."""
    return identity_settings(
        database_url=database_url,
        redis_url=private_redis.url,
        redis_prefix="hf:",
        data_dir=tmp_path / "data",
        **overrides,
    )


@pytest.fixture
async def private_app(
    database_url: str, private_redis: EmbeddedRedis, tmp_path: Path
) -> AsyncIterator[FastAPI]:
    application = create_app(private_settings(database_url, private_redis, tmp_path))
    async with application.router.lifespan_context(application):
        yield application
