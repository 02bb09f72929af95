"""An app with the outbox worker on, each test with a database of its own (the worker
carries every message it finds), a real SMTP server, and the steps the tests share."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import func, select

from healthforms.outbox.models import Delivery, OutboxMessage
from tests.support.apps import asgi_client, running_app
from tests.support.identity import identity_settings
from tests.support.smtp import SmtpServer

MARKER = "Quillfeather"  # a patient's name that must never reach an email
FIELDS = [
    {"id": "name", "type": "text", "label": "Full name", "required": True, "identifies": "name"},
    {"id": "reason", "type": "textarea", "label": "Reason for visit"},
]


class AppFactory(Protocol):
    def __call__(self, **overrides: Any) -> AbstractAsyncContextManager[FastAPI]: ...


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer.running() as server:
        yield server


@pytest.fixture
def outbox_app(
    fresh_database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path, redis_client: Redis
) -> AppFactory:
    """An app of this test alone (its own database: the outbox worker carries every
    message it finds) with the outbox worker on and short retry times."""

    @asynccontextmanager
    async def running(**overrides: Any) -> AsyncIterator[FastAPI]:
        values: dict[str, Any] = {
            "outbox_worker": True,
            "outbox_poll_s": 0.1,
            "outbox_reclaim_s": 1.0,
            "outbox_retry_base_s": 0.2,
            "public_url": "https://forms.clinic.example",
            **overrides,
        }
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


async def published_form(http: httpx.AsyncClient) -> tuple[str, str]:
    created = await http.post("/api/forms", json={"title": "Knee pain intake", "fields": FIELDS})
    assert created.status_code == 201, created.text
    form_id = created.json()["id"]
    published = await http.post(f"/api/forms/{form_id}/publish")
    assert published.status_code == 200, published.text
    return form_id, published.json()["publicId"]


async def submit(app: FastAPI, public_id: str, name: str = MARKER) -> str:
    async with asgi_client(app) as patient:
        page = await patient.get(f"/api/public/forms/{public_id}")
        sent = await patient.post(
            f"/api/public/forms/{public_id}/responses",
            json={"nonce": page.json()["nonce"], "answers": {"name": name, "reason": "Sore knee"}},
        )
        assert sent.status_code == 201, sent.text
        return str(sent.json()["confirmation"])


async def eventually(check: Any, timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("not reached in time")
        await asyncio.sleep(0.05)


async def wait_for_mail(smtp: SmtpServer, count: int, timeout_s: float = 20.0) -> list[Any]:
    return await asyncio.to_thread(smtp.wait_for, count, timeout_s)


async def delivery_statuses(app: FastAPI) -> list[str]:
    async with app.state.hf.db.sessions() as session:
        return sorted((await session.execute(select(Delivery.status))).scalars())


async def all_handled(app: FastAPI) -> bool:
    async with app.state.hf.db.sessions() as session:
        waiting = await session.execute(
            select(func.count()).where(OutboxMessage.handled_at.is_(None))
        )
        return int(waiting.scalar_one()) == 0
