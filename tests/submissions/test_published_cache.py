"""A patient's page view reads nothing from the database once the published version
is known to the process, and every instance stops showing a version once it is
replaced, unpublished or archived (real database, real Redis pub/sub)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import event

from healthforms.db.engine import Database
from tests.submissions.helpers import publish
from tests.support.apps import asgi_client, running_app


@contextmanager
def statements_run(db: Database) -> Iterator[list[str]]:
    """The SQL statements the app sends while the block runs."""
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", note)


async def test_a_page_view_reads_nothing_from_the_database_once_the_version_is_known(
    app: FastAPI, editor_http: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    form = await publish(editor_http)
    public_id = form["publicId"]
    assert (await client.get(f"/api/public/forms/{public_id}")).status_code == 200
    # The first page view also learns the clinic's branding (branding/service.py's cache).
    assert (await client.get(f"/f/{public_id}")).status_code == 200
    with statements_run(app.state.hf.db) as seen:
        for _ in range(5):
            api = await client.get(f"/api/public/forms/{public_id}")
            assert api.status_code == 200 and api.json()["form"]["title"] == form["title"]
            page = await client.get(f"/f/{public_id}")
            assert page.status_code == 200 and form["title"] in page.text
    assert seen == []


async def test_a_new_version_shows_at_once_and_an_unpublished_form_is_gone_at_once(
    editor_http: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    form = await publish(editor_http)
    url = f"/api/public/forms/{form['publicId']}"
    assert (await client.get(url)).json()["form"]["version"] == 1
    saved = await editor_http.put(
        f"/api/forms/{form['id']}",
        json={"title": "Intake, second edition", "description": "", "fields": form["fields"]},
    )
    assert saved.status_code == 200, saved.text
    assert (await editor_http.post(f"/api/forms/{form['id']}/publish")).status_code == 200
    shown = (await client.get(url)).json()["form"]
    assert (shown["version"], shown["title"]) == (2, "Intake, second edition")
    assert (await editor_http.post(f"/api/forms/{form['id']}/unpublish")).status_code == 200
    assert (await client.get(url)).status_code == 404
    assert (await client.get(f"/f/{form['publicId']}")).status_code == 404


async def test_another_instance_stops_showing_a_withdrawn_form(
    app: FastAPI, editor_http: httpx.AsyncClient
) -> None:
    """Two instances on one database and Redis: what one withdraws, the other's cache
    drops through pub/sub (before, nothing was cached, so nothing could go stale)."""
    async with running_app(app.state.hf.settings) as other, asgi_client(other) as patient:
        await _wait_subscribed(other)
        form = await publish(editor_http)
        url = f"/api/public/forms/{form['publicId']}"
        assert (await patient.get(url)).status_code == 200  # now cached over there
        assert other.state.hf.published_forms.get(form["publicId"]) is not None
        assert (await editor_http.delete(f"/api/forms/{form['id']}")).status_code == 204
        for _ in range(100):
            if (await patient.get(url)).status_code == 404:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the other instance kept showing an archived form")


async def _wait_subscribed(app: FastAPI) -> None:
    for _ in range(100):
        if app.state.hf.published_forms.subscribed:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the published-forms cache never subscribed")
