"""PDF renders under a real `healthforms serve --workers 2`: each uvicorn worker starts
its own render children, a render past its time limit is killed and refused, and the
service keeps answering meanwhile."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from tests.conftest import TEST_ENCRYPTION_KEY, make_settings
from tests.pdf.test_render_limits import HUGE_HISTORY, TOO_EXPENSIVE
from tests.support.identity import GENEROUS_AUTH_RATE
from tests.support.response_factory import create_form, create_response, intake_answers
from tests.support.servers import start_server
from tests.web.seed import create_users

pytestmark = pytest.mark.multiprocess


async def test_renders_under_uvicorn_workers_are_bounded_and_the_service_answers(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    (user,) = await asyncio.to_thread(create_users, database_url, [("Pat Printer", "admin")])
    settings = make_settings(
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        data_dir=tmp_path / "data",
    )
    db = Database.connect(database_url)
    try:
        keys = KeyRing.from_settings(settings)
        form = (await create_form(db, user.organization_id))[0]
        small = [await create_response(db, keys, form, intake_answers()) for _ in range(4)]
        huge = await create_response(db, keys, form, intake_answers(history=HUGE_HISTORY))
    finally:
        await db.dispose()
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "HEALTHFORMS_REDIS_PREFIX": redis_prefix,
        "HEALTHFORMS_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
        "HEALTHFORMS_ENV": "development",
        "HEALTHFORMS_DATA_DIR": str(tmp_path / "data"),
        "HEALTHFORMS_LOG_LEVEL": "warning",
        "HEALTHFORMS_RATE_LIMIT_AUTH": GENEROUS_AUTH_RATE,
        "HEALTHFORMS_RATE_LIMIT_PDF": "1000/min+100",
        "HEALTHFORMS_PDF_RENDER_TIMEOUT": "1.5",
    }
    server = start_server(env, tmp_path / "logs", workers=2)
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as http:
            login = await http.post(
                "/api/auth/session-login", json={"email": user.email, "password": user.password}
            )
            assert login.status_code == 200, login.text
            http.headers["X-CSRF-Token"] = login.json()["csrfToken"]

            async def generate(response_id: str) -> httpx.Response:
                return await http.post(f"/api/responses/{response_id}/generate-pdf")

            jobs = [asyncio.create_task(generate(r)) for r in [huge, *small]]
            health_checks = 0  # counted, not timed: the workers kept answering
            while not all(job.done() for job in jobs):
                assert (await http.get("/health")).status_code == 200
                health_checks += 1
                await asyncio.sleep(0.05)
            killed, *printed = [job.result() for job in jobs]

            assert killed.status_code == 422
            assert killed.json() == TOO_EXPENSIVE
            for reply in printed:
                assert reply.status_code == 200, reply.text
                assert reply.content.startswith(b"%PDF-")
            assert health_checks >= 3
            for response_id in small:
                stored = await http.get(f"/responses/{response_id}/pdf")
                assert stored.status_code == 200
                assert stored.headers["content-type"] == "application/pdf"
            missing = await http.get(f"/responses/{huge}/pdf")
            assert missing.status_code == 404
            assert missing.json()["code"] == "pdf_not_generated"
    finally:
        server.stop()
