"""Public uploads take the client's `public` rate-limit token, like every public call."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from healthforms.state import AppState
from healthforms.uploads.models import Upload
from tests.submissions.helpers import fetch_nonce, publish
from tests.uploads.helpers import UPLOAD_FIELDS, photo_with_gps, upload


@pytest.fixture
def settings_overrides(settings_overrides: dict[str, Any]) -> dict[str, Any]:
    return {**settings_overrides, "rate_limit_public": "2/min+1"}


async def test_uploads_past_the_public_limit_are_429_and_store_nothing(
    editor_http: httpx.AsyncClient, client: httpx.AsyncClient, app: FastAPI
) -> None:
    form = await publish(editor_http, UPLOAD_FIELDS)
    public_id = form["publicId"]
    nonce = await fetch_nonce(client, public_id)  # the first of three tokens
    replies = [await upload(client, public_id, nonce, "papers", photo_with_gps()) for _ in range(3)]
    assert [r.status_code for r in replies] == [201, 201, 429]
    assert replies[2].json()["code"] == "rate_limited"
    assert "retry-after" in replies[2].headers
    state: AppState = app.state.hf
    async with state.db.sessions() as session:
        query = select(func.count()).select_from(Upload).where(Upload.form_id == form["id"])
        assert (await session.execute(query)).scalar_one() == 2
