"""Drafts are the database's: with Redis killed or hung, saving, resuming and sending
still work (degraded, counted), and a pointer missing afterwards changes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from healthforms.app import create_app
from healthforms.db.engine import Database
from healthforms.redis.embedded import EmbeddedRedis
from healthforms.state import AppState
from tests.forms.helpers import feature_settings
from tests.submissions.drafts.helpers import (
    draft_rows,
    half_answers,
    nonce_of,
    phone,
    public_id_of,
    resume_code,
    resume_link,
    save,
)
from tests.support.response_factory import create_form, create_organization, signature_data_url
from tests.support.servers import hung


@pytest.fixture
async def private_app(
    database_url: str, private_redis: EmbeddedRedis, redis_prefix: str, tmp_path: Path
) -> AsyncIterator[FastAPI]:
    """An app on a Redis of this test alone (safe to kill and freeze)."""
    settings = feature_settings(
        database_url=database_url,
        redis_url=private_redis.url,
        redis_prefix=redis_prefix,
        data_dir=tmp_path / "private-data",
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


async def _back(state: AppState) -> None:
    for _ in range(100):
        if state.redis.available or await state.redis.ping():
            return
        await asyncio.sleep(0.1)


async def _round_trip(app: FastAPI, db: Database, form_id: str, public_id: str) -> None:
    """Save on one phone, resume by link and by code on two others, send: draft gone."""
    before = {row.id for row in await draft_rows(db, form_id)}
    async with phone(app) as first:
        nonce = await nonce_of(first, public_id)
        saved = await save(first, public_id, half_answers(), nonce=nonce)
        assert saved.status_code == 201, saved.text
        draft = saved.json()["draft"]
        again = await save(first, public_id, half_answers(dob="1990-01-01"), draft=draft["token"])
        assert again.status_code == 200, again.text
    async with phone(app, ip="198.51.100.31") as second:
        by_code = await resume_code(second, public_id, draft["code"])
        assert by_code.status_code == 200, by_code.text
        assert by_code.json()["answers"]["dob"] == "1990-01-01"
    async with phone(app, ip="198.51.100.32") as third:
        by_link = await resume_link(third, draft["token"])
        assert by_link.status_code == 200, by_link.text
        answers = {
            **by_link.json()["answers"],
            "email": "quill@example.org",
            "consent": True,
            "signature": signature_data_url(),
        }
        body = {
            "nonce": await nonce_of(third, public_id),
            "answers": answers,
            "draft": draft["token"],
        }
        sent = await third.post(f"/api/public/forms/{public_id}/responses", json=body)
        assert sent.status_code == 201, sent.text
        assert (await resume_link(third, draft["token"])).status_code == 404
    assert {row.id for row in await draft_rows(db, form_id)} == before


def _degraded(state: AppState) -> float:
    total = 0.0
    for metric in state.metrics.degraded_decisions.collect():
        for sample in metric.samples:
            if sample.labels.get("feature") == "drafts" and sample.name.endswith("_total"):
                total += sample.value
    return total


async def test_drafts_work_with_redis_killed_and_after_it_is_back(
    private_app: FastAPI, private_redis: EmbeddedRedis
) -> None:
    state: AppState = private_app.state.hf
    organization_id = await create_organization(state.db)
    form = (await create_form(state.db, organization_id))[0]
    public_id = await public_id_of(state.db, form.form_id)
    async with phone(private_app) as early:
        saved_before = (
            await save(early, public_id, half_answers(), nonce=await nonce_of(early, public_id))
        ).json()["draft"]

    private_redis.kill()
    await _round_trip(private_app, state.db, form.form_id, public_id)
    assert not state.redis.available
    assert _degraded(state) > 0

    # Back, and flushed (a restart without persistence): the pointer saved before is
    # gone; the database still knows the draft.
    private_redis.restart()
    await _back(state)
    flushed = Redis.from_url(private_redis.url)
    try:
        assert [key async for key in flushed.scan_iter(match="*draft:*")] == []
    finally:
        await flushed.aclose()
    async with phone(private_app) as later:
        assert (await resume_link(later, saved_before["token"])).status_code == 200
    await _round_trip(private_app, state.db, form.form_id, public_id)


async def test_drafts_work_while_redis_hangs(
    private_app: FastAPI, private_redis: EmbeddedRedis
) -> None:
    state: AppState = private_app.state.hf
    organization_id = await create_organization(state.db)
    form = (await create_form(state.db, organization_id))[0]
    public_id = await public_id_of(state.db, form.form_id)
    with hung(private_redis):
        await _round_trip(private_app, state.db, form.form_id, public_id)
        assert _degraded(state) > 0
    await _back(state)
    await _round_trip(private_app, state.db, form.form_id, public_id)
