"""A patient's fetch and submit: Redis round trips, and the `public` limit on every answer.

Fetching writes nothing to Redis (the nonce's MAC is enough until it is submitted);
submitting sends the rate-limit token and the nonce claim in one write, then the
confirmation: two round trips. Over the limit, every answer is 429, even one the route
would have given without taking the token (400, 404, 422), and a refused submission
gives its claim back.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from healthforms.redis.embedded import EmbeddedRedis
from healthforms.state import AppState
from tests.submissions.helpers import count_rows, fetch_nonce, good_answers, publish, submit
from tests.support.identity import new_client

LIMITED = "1/min+2"  # a bucket of 3 per client IP


@pytest.fixture
def settings_overrides(
    settings_overrides: dict[str, Any], private_redis: EmbeddedRedis
) -> dict[str, Any]:
    """tests/submissions' overrides, plus the tight `public` limit and a private Redis."""
    # A Redis of this test alone: another test's SCRIPT FLUSH on the shared server would
    # add NOSCRIPT reloads to the writes counted here.
    return {**settings_overrides, "redis_url": private_redis.url, "rate_limit_public": LIMITED}


def _writes(app: FastAPI) -> int:
    state: AppState = app.state.hf
    return state.redis.mux.counters.writes


async def test_fetch_is_one_round_trip_and_submit_two(
    editor_http: httpx.AsyncClient, app: FastAPI, private_redis: EmbeddedRedis
) -> None:
    redis_client = Redis.from_url(private_redis.url)
    form = await publish(editor_http)
    async with new_client(app, ip="198.51.100.20") as first_patient:
        # A fresh server: the first submission also loads the scripts (NOSCRIPT).
        warm_up = await fetch_nonce(first_patient, form["publicId"])
        assert (await submit(first_patient, form["publicId"], warm_up, good_answers())).is_success
    async with new_client(app, ip="198.51.100.21") as patient:
        before = _writes(app)
        nonce = await fetch_nonce(patient, form["publicId"])
        fetched = _writes(app)
        reply = await submit(patient, form["publicId"], nonce, good_answers())
        submitted = _writes(app)
    assert reply.status_code == 201
    assert reply.headers["ratelimit-policy"] == '"public";q=3;w=60'
    assert reply.headers["ratelimit-remaining"] == "1"  # the fetch and the submit
    assert fetched - before == 1  # the rate check alone; the nonce needs no key
    assert submitted - fetched == 2  # rate token + claim in one write, then confirm
    state: AppState = app.state.hf
    nonce_id = nonce.split(".")[0]
    stored: Any = await redis_client.get(
        state.redis.key(f"nonce:{{{form['publicId']}}}:{nonce_id}")
    )
    assert stored is not None and bytes(stored).startswith(b"used:")
    await redis_client.aclose()


async def test_over_the_limit_every_answer_is_429_and_the_claim_is_given_back(
    editor_http: httpx.AsyncClient, app: FastAPI, private_redis: EmbeddedRedis
) -> None:
    redis_client = Redis.from_url(private_redis.url)
    form = await publish(editor_http)
    public_id = form["publicId"]
    async with new_client(app, ip="198.51.100.22") as patient:
        nonce = await fetch_nonce(patient, public_id)  # token 1 of 3
        invalid = await submit(patient, public_id, nonce, good_answers(email="nope"))
        assert invalid.status_code == 422  # token 2: taken although the route said 422
        unknown = await submit(patient, "does-not-exist", nonce, good_answers())
        assert unknown.status_code == 404  # token 3
        refused = [
            await submit(patient, public_id, nonce, good_answers()),  # would be 201
            await submit(patient, public_id, nonce, good_answers(email="nope")),  # 422
            await submit(patient, public_id, "garbage", good_answers()),  # 400
            await submit(patient, "does-not-exist", nonce, good_answers()),  # 404
        ]
    for reply in refused:
        assert reply.status_code == 429, reply.text
        assert reply.json()["code"] == "rate_limited"
        assert int(reply.headers["retry-after"]) >= 1
        assert reply.headers["ratelimit-remaining"] == "0"
    assert await count_rows(app, form["id"]) == 0
    # The refused submission's claim was given back: the same nonce, from a client
    # with tokens left, stores the response.
    state: AppState = app.state.hf
    nonce_id = nonce.split(".")[0]
    assert await redis_client.exists(state.redis.key(f"nonce:{{{public_id}}}:{nonce_id}")) == 0
    await redis_client.aclose()
    async with new_client(app, ip="198.51.100.23") as other_network:
        stored = await submit(other_network, public_id, nonce, good_answers())
    assert stored.status_code == 201
    assert await count_rows(app, form["id"]) == 1
