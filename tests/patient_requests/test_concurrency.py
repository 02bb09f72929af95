"""Two phones sending the same request at once (different nonces): exactly one response,
the other 410, in one process (the app's own concurrency) and across server processes
sharing one database and one Redis."""

from __future__ import annotations

import asyncio
import base64
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import select

from healthforms.clock import utcnow
from healthforms.crypto.keys import KeyRing
from healthforms.db.base import new_id
from healthforms.db.engine import Database
from healthforms.forms.models import Form
from healthforms.patient_requests.models import PatientRequest
from healthforms.patient_requests.service import Contact, new_token, seal_contact, token_hash
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.patient_requests.helpers import (
    answers,
    create_request,
    fresh_nonce,
    request_row,
    response_count,
    token_of,
)
from tests.submissions.helpers import INTAKE_FIELDS, good_answers, publish_direct
from tests.support.apps import asgi_client
from tests.support.response_factory import PublishedForm
from tests.support.servers import running_servers

PHONES = 6


async def test_phones_sending_one_request_at_once_store_exactly_one(
    app: FastAPI, db: Database, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    created = await create_request(admin, clinic.form_id)
    token = token_of(created["link"])
    nonces = [await fresh_nonce(app, token) for _ in range(PHONES)]

    async def send(i: int, nonce: str) -> httpx.Response:
        async with asgi_client(app) as phone:
            return await phone.post(
                f"/api/public/requests/{token}/responses",
                json={"nonce": nonce, "answers": answers(name=f"Phone {i}")},
            )

    replies = await asyncio.gather(*(send(i, n) for i, n in enumerate(nonces)))
    statuses = sorted(r.status_code for r in replies)
    assert statuses == [201] + [410] * (PHONES - 1), [r.text for r in replies]
    assert all(r.json()["code"] == "request_closed" for r in replies if r.status_code == 410)
    assert await response_count(db, clinic.form_id) == 1
    row = await request_row(db, created["request"]["id"])
    assert row.state == "completed" and row.response_id is not None
    # The winner's resend still gets its confirmation; the others stay refused.
    winner = next(i for i, r in enumerate(replies) if r.status_code == 201)
    again = await send(winner, nonces[winner])
    assert (again.status_code, again.json()) == (200, replies[winner].json())
    loser = next(i for i, r in enumerate(replies) if r.status_code == 410)
    assert (await send(loser, nonces[loser])).status_code == 410


async def _insert_request(database_url: str, form_id: str, token: str) -> str:
    """A live request written as the service writes one (sealed under the test key)."""
    keys = KeyRing(current=base64.b64decode(TEST_ENCRYPTION_KEY))
    db = Database.connect(database_url)
    try:
        async with db.sessions() as session, session.begin():
            form = (await session.execute(select(Form).where(Form.id == form_id))).scalar_one()
            request_id = new_id("req_")
            sealed = seal_contact(keys, request_id, Contact(name="Multi Process"))
            now = utcnow()
            session.add(
                PatientRequest(
                    id=request_id,
                    organization_id=form.organization_id,
                    form_id=form_id,
                    token_hash=token_hash(token),
                    ciphertext=sealed.ciphertext,
                    wrapped_key=sealed.wrapped_key,
                    key_id=sealed.key_id,
                    state="created",
                    expires_at=now + timedelta(days=1),
                    created_at=now,
                )
            )
        return request_id
    finally:
        await db.dispose()


@pytest.mark.multiprocess
async def test_phones_on_different_server_processes_store_exactly_one(
    database_url: str, redis_url: str, redis_prefix: str, redis_client: Redis, tmp_path: Path
) -> None:
    form_id, _ = await publish_direct(database_url, INTAKE_FIELDS)
    token = new_token()
    request_id = await _insert_request(database_url, form_id, token)
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "HEALTHFORMS_REDIS_PREFIX": redis_prefix,
        "HEALTHFORMS_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
        "HEALTHFORMS_ENV": "development",
        "HEALTHFORMS_DATA_DIR": str(tmp_path / "data"),
        "HEALTHFORMS_LOG_LEVEL": "warning",
        "HEALTHFORMS_RATE_LIMIT_PUBLIC": "100000/min+10000",
    }
    with running_servers(2, env, tmp_path / "logs") as servers:
        async with httpx.AsyncClient(timeout=30) as http:
            nonces = []
            for i in range(PHONES):
                page = await http.get(f"{servers[i % 2].base_url}/api/public/requests/{token}")
                assert page.status_code == 200, page.text
                nonces.append(page.json()["nonce"])
            replies = await asyncio.gather(
                *(
                    http.post(
                        f"{servers[i % 2].base_url}/api/public/requests/{token}/responses",
                        json={"nonce": nonce, "answers": good_answers(name=f"Phone {i}")},
                    )
                    for i, nonce in enumerate(nonces)
                )
            )
    statuses = sorted(r.status_code for r in replies)
    assert statuses == [201] + [410] * (PHONES - 1), [r.text for r in replies]
    db = Database.connect(database_url)
    try:
        assert await response_count(db, form_id) == 1
        row = await request_row(db, request_id)
        assert row.state == "completed" and row.response_id is not None
    finally:
        await db.dispose()
