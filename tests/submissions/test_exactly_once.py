"""Exactly one stored response per nonce: races, a flushed Redis, Redis down; no PHI in Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import text

from healthforms.app import create_app
from healthforms.redis.embedded import EmbeddedRedis
from healthforms.security.principal import Role
from healthforms.state import AppState
from tests.forms.helpers import StaffDirectory, feature_settings, signed_in
from tests.submissions.helpers import (
    SIGNATURE,
    count_rows,
    fetch_nonce,
    good_answers,
    publish,
    stored_rows,
    submit,
)

MARKER = "ZQXMARKER7731"


@pytest.fixture
async def private_app(
    database_url: str, private_redis: EmbeddedRedis, redis_prefix: str, tmp_path: Path
) -> AsyncIterator[FastAPI]:
    """An app on a Redis of this test alone (safe to flush, kill and restart)."""
    settings = feature_settings(
        database_url=database_url,
        redis_url=private_redis.url,
        redis_prefix=redis_prefix,
        data_dir=tmp_path / "private-data",
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def private_public(private_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=private_app, client=("198.51.100.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
async def private_editor(private_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    directory = StaffDirectory(private_app)
    editor = await directory.user(Role.EDITOR)
    async with signed_in(private_app, directory, editor) as http:
        yield http


async def test_twenty_concurrent_copies_store_exactly_one(
    editor_http: httpx.AsyncClient, client: httpx.AsyncClient, app: FastAPI
) -> None:
    form = await publish(editor_http)
    pid = form["publicId"]
    nonce = await fetch_nonce(client, pid)
    answers = good_answers(sig=SIGNATURE)
    replies = await asyncio.gather(*(submit(client, pid, nonce, answers) for _ in range(20)))
    statuses = [r.status_code for r in replies]
    assert statuses.count(201) == 1, statuses
    confirmations = {r.json()["confirmation"] for r in replies if r.status_code in (200, 201)}
    assert len(confirmations) == 1
    for reply in replies:
        if reply.status_code == 409:
            assert reply.json()["code"] == "submission_in_progress"
        else:
            assert reply.status_code in (200, 201)
    assert await count_rows(app, form["id"]) == 1
    # Once stored, every resend gets the same confirmation.
    late = await submit(client, pid, nonce, answers)
    assert late.status_code == 200
    assert late.json()["confirmation"] in confirmations


async def test_after_flushall_a_used_nonce_is_still_refused(
    private_app: FastAPI,
    private_editor: httpx.AsyncClient,
    private_public: httpx.AsyncClient,
    private_redis: EmbeddedRedis,
) -> None:
    form = await publish(private_editor)
    pid = form["publicId"]
    nonce = await fetch_nonce(private_public, pid)
    first = await submit(private_public, pid, nonce, good_answers())
    assert first.status_code == 201

    flusher = Redis.from_url(private_redis.url)
    await flusher.flushall()
    # A nonce issued before the flush and never used still works (MAC + expiry).
    unused = await fetch_nonce(private_public, pid)
    await flusher.flushall()

    changed = await submit(private_public, pid, nonce, good_answers(name="Other Person"))
    assert changed.status_code == 409
    assert changed.json()["code"] == "nonce_used"
    await flusher.flushall()
    same = await submit(private_public, pid, nonce, good_answers())
    assert same.status_code == 200
    assert same.json() == first.json()
    assert await count_rows(private_app, form["id"]) == 1

    # Concurrent copies of a never-used nonce after a flush: still exactly one.
    replies = await asyncio.gather(
        *(submit(private_public, pid, unused, good_answers(name="Bo")) for _ in range(10))
    )
    statuses = [r.status_code for r in replies]
    assert statuses.count(201) == 1, statuses
    assert set(statuses) <= {200, 201, 409}
    assert await count_rows(private_app, form["id"]) == 2
    await flusher.aclose()


async def test_redis_down_still_stores_exactly_one_and_recovers(
    private_app: FastAPI,
    private_editor: httpx.AsyncClient,
    private_public: httpx.AsyncClient,
    private_redis: EmbeddedRedis,
) -> None:
    form = await publish(private_editor)
    pid = form["publicId"]
    before = await fetch_nonce(private_public, pid)
    private_redis.kill()
    # Issuing still works (the MAC carries it), and so does submitting.
    during = await fetch_nonce(private_public, pid)
    replies = await asyncio.gather(
        *(submit(private_public, pid, before, good_answers()) for _ in range(8))
    )
    statuses = sorted(r.status_code for r in replies)
    assert statuses == [200] * 7 + [201], statuses
    assert len({r.json()["confirmation"] for r in replies}) == 1
    reused = await submit(private_public, pid, before, good_answers(name="Changed"))
    assert reused.status_code == 409 and reused.json()["code"] == "nonce_used"
    assert (await submit(private_public, pid, during, good_answers())).status_code == 201
    state: AppState = private_app.state.hf
    assert not state.redis.available

    private_redis.restart()
    for _ in range(100):
        if state.redis.available or await state.redis.ping():
            break
        await asyncio.sleep(0.1)
    after = await fetch_nonce(private_public, pid)
    assert (await submit(private_public, pid, after, good_answers())).status_code == 201
    assert (await submit(private_public, pid, during, good_answers())).status_code == 200
    assert await count_rows(private_app, form["id"]) == 3


async def _dump_all_keys(redis: Redis) -> list[tuple[bytes, bytes, int]]:
    """Every key, a textual dump of its value, and its TTL."""
    found: list[tuple[bytes, bytes, int]] = []
    async for key in redis.scan_iter(count=500):
        kind = str(await redis.type(key), "ascii")  # type: ignore[arg-type]
        value: Any
        if kind == "string":
            value = await redis.get(key)
        elif kind == "hash":
            value = await redis.hgetall(key)
        elif kind == "set":
            value = await redis.smembers(key)
        elif kind == "zset":
            value = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            value = await redis.lrange(key, 0, -1)
        else:
            value = await redis.dump(key)
        ttl = await redis.pttl(key)
        if ttl == -2:
            # The key expired between SCAN and PTTL (a rate-limit window
            # ending): it had a TTL, and there is nothing left to read.
            continue
        found.append((key, repr(value).encode(), ttl))
    return found


async def test_no_phi_in_redis_or_in_clear_in_the_database(
    private_app: FastAPI,
    private_editor: httpx.AsyncClient,
    private_public: httpx.AsyncClient,
    private_redis: EmbeddedRedis,
) -> None:
    form = await publish(private_editor)
    pid = form["publicId"]
    marked = good_answers(
        name=f"Ada {MARKER}",
        notes=MARKER,
        email=f"{MARKER.lower()}@example.org",
        code="ABC-12",
    )
    for _ in range(3):
        nonce = await fetch_nonce(private_public, pid)
        assert (await submit(private_public, pid, nonce, marked)).status_code == 201
        assert (await submit(private_public, pid, nonce, marked)).status_code == 200
        assert (
            await submit(private_public, pid, nonce, {**marked, "notes": "x"})
        ).status_code == 409
    invalid = await submit(
        private_public, pid, await fetch_nonce(private_public, pid), {**marked, "age": MARKER}
    )
    assert invalid.status_code == 422
    assert MARKER not in invalid.text

    redis = Redis.from_url(private_redis.url)
    try:
        dump = await _dump_all_keys(redis)
    finally:
        await redis.aclose()
    assert len(dump) >= 4
    for key, value, ttl in dump:
        assert MARKER.encode() not in key and MARKER.lower().encode() not in key
        assert MARKER.encode() not in value and MARKER.lower().encode() not in value
        assert ttl > 0, key

    state: AppState = private_app.state.hf
    async with state.db.engine.connect() as conn:
        for table in ("responses", "audit_events"):
            rows = (await conn.execute(text(f"SELECT * FROM {table}"))).all()  # noqa: S608
            assert rows or table == "audit_events"
            for row in rows:
                blob = repr(tuple(row)).encode()
                assert MARKER.encode() not in blob and MARKER.lower().encode() not in blob
                for column in row:
                    if isinstance(column, bytes | memoryview):
                        raw = bytes(column)
                        assert MARKER.encode() not in raw and MARKER.lower().encode() not in raw
    assert len(await stored_rows(private_app, form["id"])) == 3


async def test_a_claim_left_by_a_dead_instance_after_its_commit_is_answered_from_the_database(
    private_app: FastAPI,
    private_editor: httpx.AsyncClient,
    private_public: httpx.AsyncClient,
    private_redis: EmbeddedRedis,
) -> None:
    """An instance killed between its commit and the confirmation leaves its claim for
    the lease (60 s). A balancer's retry of the same submission then gets the stored
    reply at once instead of "in progress" (tests/scale/test_balancer.py)."""
    form = await publish(private_editor)
    pid = form["publicId"]
    nonce = await fetch_nonce(private_public, pid)
    first = await submit(private_public, pid, nonce, good_answers())
    assert first.status_code == 201
    redis = Redis.from_url(private_redis.url)
    try:
        (key,) = [k async for k in redis.scan_iter(match="*nonce:*")]
        raw = await redis.get(key)
        assert raw is not None
        used = raw.decode() if isinstance(raw, bytes) else str(raw)
        assert used.startswith("used:")
        digest = used.split(":")[1]
        # As the dead instance left it: claimed, never confirmed.
        await redis.set(key, f"claiming:{digest}", px=60_000)
        again = await submit(private_public, pid, nonce, good_answers())
        assert again.status_code == 200
        assert again.json()["confirmation"] == first.json()["confirmation"]
        other = await submit(private_public, pid, nonce, good_answers(name="Other Person"))
        assert other.status_code == 409
        assert other.json()["code"] == "nonce_used"
    finally:
        await redis.aclose()
    assert await count_rows(private_app, form["id"]) == 1
