"""Apps with the outbox worker and the webhook dispatcher on, short retry times and a
short circuit cool-down, each test with a database of its own; real HTTP receivers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import select

from healthforms.outbox.models import Delivery
from tests.outbox.conftest import AppFactory
from tests.support.apps import running_app
from tests.support.identity import identity_settings
from tests.webhooks.receiver import Receiver, running_receiver

MARKER = "Quillfeather"  # a patient's name that must never reach a webhook
ALL_EVENTS = ["response.submitted", "response.reviewed", "form.published", "request.completed"]
FAST = {
    "outbox_worker": True,
    "outbox_poll_s": 0.1,
    "outbox_reclaim_s": 1.0,
    "outbox_retry_base_s": 0.2,
    "webhook_poll_s": 0.1,
    "webhook_retry_base_s": 0.1,
    "webhook_retry_max_s": 0.5,
    "webhook_max_attempts": 50,
    "webhook_circuit_failures": 50,
    "webhook_circuit_cooldown_s": 1.0,
    "webhook_connect_timeout_s": 1.0,
    "webhook_timeout_s": 2.0,
    "public_url": "https://forms.clinic.example",
}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as server:
        yield server


@pytest.fixture
def webhook_app(
    fresh_database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path, redis_client: Redis
) -> AppFactory:
    @asynccontextmanager
    async def running(**overrides: Any) -> AsyncIterator[FastAPI]:
        values: dict[str, Any] = {**FAST, **overrides}
        settings = identity_settings(
            database_url=values.pop("database_url", fresh_database_url),
            redis_url=values.pop("redis_url", redis_url),
            redis_prefix=redis_prefix,
            data_dir=tmp_path / "data",
            **values,
        )
        async with running_app(settings) as application:
            yield application

    return running


async def add_endpoint(
    admin: httpx.AsyncClient, url: str, events: list[str] | None = None, **extra: Any
) -> tuple[str, str]:
    """Register an endpoint through the API: its id and its secret."""
    created = await admin.post(
        "/api/webhooks", json={"url": url, "events": events or ALL_EVENTS, **extra}
    )
    assert created.status_code == 201, created.text
    body = created.json()
    return str(body["id"]), str(body["secret"])


async def webhook_deliveries(app: FastAPI) -> list[Delivery]:
    async with app.state.hf.db.sessions() as session:
        rows = await session.execute(select(Delivery).where(Delivery.channel == "webhook"))
        return list(rows.scalars())


def assert_no_phi(receiver: Receiver, *secrets: str) -> None:
    for call in receiver.received():
        wire = call.body.decode() + repr(call.headers)
        for secret in (MARKER, *secrets):
            assert secret not in wire
