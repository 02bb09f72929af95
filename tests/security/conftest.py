"""Fixtures for the lock tests: a LockService on the leg's Redis and database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from healthforms.app import build_redis
from healthforms.config import Settings
from healthforms.db.engine import Database
from healthforms.health.metrics import Metrics
from healthforms.redis.client import RedisService
from healthforms.security.locks import LockService


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
