"""Expensive PDFs: renders run in a child process killed at its time limit, and what a
render costs in CPU is charged to the user's `pdf` bucket (issue 12, item 12)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from healthforms.pdf.service import PdfTooExpensive, extra_tokens
from healthforms.processes import ChildFailed, ChildProcesses, ChildrenBusy, ChildTimedOut
from healthforms.responses.models import ResponsePdf
from healthforms.security.locks import PDF_LOCK_KEY
from healthforms.security.ratelimit import LocalBuckets, RateLimiter
from tests.pdf import child_jobs
from tests.pdf.test_generate import count_events
from tests.support.identity import GENEROUS_AUTH_RATE
from tests.support.response_factory import (
    PublishedForm,
    create_form,
    create_organization,
    create_response,
    intake_answers,
)
from tests.support.response_fixtures import AppWith
from tests.support.staff import signed_in_client

# ~900 KB of answer text: about 11 s of CPU to print (written straight to the database,
# as a response stored before the submission cap could be).
HUGE_HISTORY = "Chronic condition, see notes. " * 30_000
TOO_EXPENSIVE = {"error": PdfTooExpensive.message, "code": "pdf_too_expensive"}


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"rate_limit_auth": GENEROUS_AUTH_RATE, "pdf_render_timeout_s": 1.0}


@pytest.fixture
async def workers() -> AsyncIterator[ChildProcesses]:
    pool = ChildProcesses(2)
    try:
        yield pool
    finally:
        await pool.close()


def process_gone(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        return True
    return "State:\tZ" in status.read_text()  # exited, not yet reaped


# The child processes ------------------------------------------------------------------


async def test_a_child_job_returns_its_bytes_and_cpu_time(workers: ChildProcesses) -> None:
    echoed = await workers.run(child_jobs.echo_twice, b"ab", timeout_s=30, wait_s=30)
    burned = await workers.run(child_jobs.burn_then_answer, 0.3, timeout_s=30, wait_s=30)
    assert echoed.value == b"abab"
    assert burned.value == b"done"
    assert 0.25 <= burned.cpu_s < 5
    assert workers.running == 0


async def test_a_job_past_its_time_limit_is_killed_while_the_loop_keeps_running(
    workers: ChildProcesses, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    with pytest.raises(ChildTimedOut):  # a job that never ends: only the kill ends it
        await workers.run(child_jobs.spin_forever, str(pid_file), timeout_s=1.0, wait_s=30)
    ticker.cancel()

    assert ticks >= 40  # the event loop never waited on the job
    pid = int(pid_file.read_text())
    assert process_gone(pid)
    assert workers.running == 0


async def test_a_failing_job_reports_its_type_only(workers: ChildProcesses) -> None:
    with pytest.raises(ChildFailed) as failed:
        await workers.run(child_jobs.fail_with_patient_data, b"", timeout_s=30, wait_s=30)
    assert failed.value.error_type == "ValueError"
    assert "Zoë" not in str(failed.value)
    with pytest.raises(ChildFailed) as wrong:
        await workers.run(child_jobs.not_bytes, b"", timeout_s=30, wait_s=30)
    assert wrong.value.error_type == "TypeError"


async def test_no_free_slot_within_the_wait_is_busy_and_close_kills(tmp_path: Path) -> None:
    pool = ChildProcesses(1)
    pid_file = tmp_path / "pid"
    spinning = asyncio.create_task(
        pool.run(child_jobs.spin_forever, str(pid_file), timeout_s=60, wait_s=1)
    )
    while not pid_file.exists() or not pid_file.read_text():
        await asyncio.sleep(0.02)
    with pytest.raises(ChildrenBusy):
        await pool.run(child_jobs.echo_twice, b"x", timeout_s=5, wait_s=0.2)
    await pool.close()
    with pytest.raises(ChildFailed):  # killed by close: its pipe closed early
        await spinning
    assert process_gone(int(pid_file.read_text()))
    with pytest.raises(ChildrenBusy):
        await pool.run(child_jobs.echo_twice, b"x", timeout_s=5, wait_s=1)


# The service ------------------------------------------------------------------------------


async def test_a_render_past_the_time_limit_is_killed_refused_and_others_are_served(
    app: FastAPI,
    db: Database,
    keys: KeyRing,
    clinic: PublishedForm,
    admin: httpx.AsyncClient,
    redis_client: Redis,
) -> None:
    response_id = await create_response(db, keys, clinic, intake_answers(history=HUGE_HISTORY))
    small_id = await create_response(db, keys, clinic, intake_answers())
    lock = app.state.hf.redis.key(PDF_LOCK_KEY.format(response_id=response_id))

    generating = asyncio.create_task(admin.post(f"/api/responses/{response_id}/generate-pdf"))
    served_meanwhile = 0
    while not generating.done():
        other = await admin.get(f"/api/responses/{small_id}")
        assert other.status_code == 200
        served_meanwhile += 1
        await asyncio.sleep(0.05)
    reply = await generating

    # Only a render killed at its limit answers this (the ~11 s render is not finished).
    assert reply.status_code == 422
    assert reply.json() == TOO_EXPENSIVE
    # The event loop kept serving while the child rendered. (Counted, not timed: how
    # fast is bench/'s question; a read takes tens of ms, the limit is 1 s.)
    assert served_meanwhile >= 5
    # The lock is released, nothing half-written is stored, no child is left.
    assert await redis_client.exists(lock) == 0
    async with db.sessions() as session:
        assert await session.get(ResponsePdf, response_id) is None
    assert await count_events(db, "pdf.generated", response_id) == 0
    assert await count_events(db, "pdf.served", response_id) == 0
    assert app.state.hf.workers.running == 0
    # Another response still prints.
    printed = await admin.post(f"/api/responses/{small_id}/generate-pdf")
    assert printed.status_code == 200 and printed.content.startswith(b"%PDF-")


async def test_an_expensive_render_costs_more_pdf_tokens(app_with: AppWith) -> None:
    async with app_with(
        rate_limit_pdf="3/min+0",  # a token every 20 s
        pdf_render_timeout_s=1.0,
        pdf_cpu_seconds_per_token=0.25,
    ) as app:
        db: Database = app.state.hf.db
        org = await create_organization(db)
        form = (await create_form(db, org))[0]
        keys = app.state.hf.keys
        huge = await create_response(db, keys, form, intake_answers(history=HUGE_HISTORY))
        small = await create_response(db, keys, form, intake_answers())
        async with signed_in_client(app, org) as (http, _):
            killed = await http.post(f"/api/responses/{huge}/generate-pdf")
            refused = await http.post(f"/api/responses/{small}/generate-pdf")
    assert killed.status_code == 422
    # The killed render used its whole second: 1 token for the request + 4 for the CPU,
    # 2 more than the bucket holds. A cheap render would have left 2 tokens.
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    # The debt is paid before the next token: ~60 s, not the 20 s of an empty bucket.
    assert int(refused.headers["retry-after"]) >= 45


def test_a_render_costs_one_more_token_per_full_step_of_cpu() -> None:
    assert extra_tokens(0.3, 2.0) == 0
    assert extra_tokens(1.99, 2.0) == 0
    assert extra_tokens(2.0, 2.0) == 1
    assert extra_tokens(11.0, 2.0) == 5
    assert extra_tokens(20.0, 2.0) == 10
    assert extra_tokens(0.0, 2.0) == 0


async def test_a_charge_goes_into_debt_up_to_its_bound(app: FastAPI, redis_client: Redis) -> None:
    limiter: RateLimiter = app.state.hf.limiter  # pdf: 10/min+2, a token every 6 s
    user = "usr_charge_test"
    assert await limiter.charge("pdf", user, 5, max_debt=12) == 7
    assert await limiter.charge("pdf", user, 100, max_debt=12) == -12  # bounded
    key = limiter.key("pdf", user)
    ttl_ms = await redis_client.pttl(key)
    assert 23 * 6_000 < ttl_ms <= 24 * 6_000  # capacity + debt, then the key is gone
    verdict = await limiter.check_one("pdf", user)
    assert not verdict.allowed
    assert 12 * 6 <= verdict.decisions[0].retry_after_s <= 13 * 6 + 1
    assert await limiter.charge("pdf", user, 0, max_debt=12) == 0  # nothing to charge


def test_the_per_process_charge_matches_the_script() -> None:
    now = [1_000_000_000]
    buckets = LocalBuckets(clock=lambda: now[0])
    emission = 6_000_000  # 10/min
    assert buckets.charge("k", emission, 12, 5, 12) == 7
    assert buckets.charge("k", emission, 12, 100, 12) == -12
    refused = buckets.take([("k", emission, 12, 1)])
    assert refused[0] == 0
    now[0] += 13 * emission  # the debt paid and one token back
    assert buckets.take([("k", emission, 12, 1)])[0] == 1
