"""The gauges /metrics reads at scrape time (what deploy/prometheus/alerts.yml alerts on):
Redis' eviction policy and the outbox backlog, from the real servers."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis
from sqlalchemy import update

from healthforms.clock import utcnow
from healthforms.health import routes as health_routes
from healthforms.outbox.models import OutboxMessage
from healthforms.outbox.store import enqueue
from healthforms.redis.embedded import EmbeddedRedis
from tests.conftest import make_settings
from tests.support.apps import asgi_client, running_app


async def _scrape(app: object) -> dict[str, float]:
    async with asgi_client(app) as http:  # type: ignore[arg-type]
        answer = await http.get("/metrics")
    assert answer.status_code == 200
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
        if not sample.labels
    }


@pytest.fixture(autouse=True)
def every_scrape_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health_routes, "SCRAPE_READ_EVERY_S", 0.0)


async def test_outbox_backlog_counts_unhandled_messages_and_the_oldest_age(
    fresh_database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    settings = make_settings(
        database_url=fresh_database_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        data_dir=tmp_path / "data",
    )
    async with running_app(settings) as app:
        empty = await _scrape(app)
        assert empty["healthforms_outbox_backlog_messages"] == 0
        assert empty["healthforms_outbox_oldest_unhandled_age_seconds"] == 0
        db = app.state.hf.db
        async with db.sessions() as session, session.begin():
            first = await enqueue(session, "org_x", "response.submitted", {"responseId": "r1"})
            await enqueue(session, "org_x", "response.submitted", {"responseId": "r2"})
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == first)
                .values(created_at=utcnow() - timedelta(minutes=20))
            )
        waiting = await _scrape(app)
        assert waiting["healthforms_outbox_backlog_messages"] == 2
        assert waiting["healthforms_outbox_oldest_unhandled_age_seconds"] >= 20 * 60
        async with db.sessions() as session, session.begin():
            await session.execute(update(OutboxMessage).values(handled_at=utcnow()))
        handled = await _scrape(app)
        assert handled["healthforms_outbox_backlog_messages"] == 0
        assert handled["healthforms_outbox_oldest_unhandled_age_seconds"] == 0


async def test_eviction_policy_gauge_follows_the_server(
    database_url: str, private_redis: EmbeddedRedis, redis_prefix: str, tmp_path: Path
) -> None:
    settings = make_settings(
        database_url=database_url,
        redis_url=private_redis.url,
        redis_prefix=redis_prefix,
        data_dir=tmp_path / "data",
    )
    admin = Redis.from_url(private_redis.url)
    try:
        await admin.config_set("maxmemory-policy", "noeviction")
        async with running_app(settings) as app:
            assert (await _scrape(app))["healthforms_redis_eviction_policy_safe"] == 1
            await admin.config_set("maxmemory-policy", "allkeys-lru")
            app.state.hf.redis._info_cache = None  # INFO is cached for a second
            assert (await _scrape(app))["healthforms_redis_eviction_policy_safe"] == 0
    finally:
        await admin.aclose()
