"""Exactly once across real server processes sharing one Redis and one database."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import func, select

from healthforms.db.engine import Database
from healthforms.responses.models import ResponseRow
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.submissions.helpers import INTAKE_FIELDS, good_answers, publish_direct
from tests.support.servers import running_servers

pytestmark = pytest.mark.multiprocess


async def test_concurrent_copies_across_processes_store_exactly_one(
    database_url: str, redis_url: str, redis_prefix: str, redis_client: Redis, tmp_path: Path
) -> None:
    form_id, public_id = await publish_direct(database_url, INTAKE_FIELDS)
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
    with running_servers(3, env, tmp_path / "logs") as servers:
        async with httpx.AsyncClient(timeout=30) as http:
            page = await http.get(f"{servers[0].base_url}/api/public/forms/{public_id}")
            nonce = page.json()["nonce"]
            body = {"nonce": nonce, "answers": good_answers()}
            replies = await asyncio.gather(
                *(
                    http.post(
                        f"{servers[i % 3].base_url}/api/public/forms/{public_id}/responses",
                        json=body,
                    )
                    for i in range(21)
                )
            )
            statuses = [r.status_code for r in replies]
            assert statuses.count(201) == 1, statuses
            assert set(statuses) <= {200, 201, 409}, statuses
            confirmations = {r.json()["confirmation"] for r in replies if r.status_code < 300}
            assert len(confirmations) == 1
            for reply in replies:
                if reply.status_code == 409:
                    assert reply.json()["code"] == "submission_in_progress"
            # Every process now answers a resend with the same confirmation.
            for server in servers:
                again = await http.post(
                    f"{server.base_url}/api/public/forms/{public_id}/responses", json=body
                )
                assert again.status_code == 200
                assert again.json()["confirmation"] in confirmations
    db = Database.connect(database_url)
    try:
        async with db.sessions() as session:
            count = (
                await session.execute(
                    select(func.count())
                    .select_from(ResponseRow)
                    .where(ResponseRow.form_id == form_id)
                )
            ).scalar_one()
    finally:
        await db.dispose()
    assert count == 1
