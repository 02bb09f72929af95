"""Forms API (API.md "Forms"): CRUD, roles, organisation scoping, revisions, versions."""

from __future__ import annotations

import re
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from healthforms.audit.models import AuditEventRow
from healthforms.forms.models import FormVersion
from healthforms.security.principal import Role
from healthforms.state import AppState
from tests.forms.helpers import StaffDirectory, signed_in, text_field

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
FORM_KEYS = {
    "id",
    "title",
    "description",
    "fields",
    "status",
    "version",
    "revision",
    "publicId",
    "hasUnpublishedChanges",
    "retentionDays",
    "thankYouMessage",  # docs/branding.md: an addition to the shape
    "createdAt",
    "updatedAt",
}


async def create(http: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    body.setdefault("title", "Intake")
    reply = await http.post("/api/forms", json=body)
    assert reply.status_code == 201, reply.text
    form: dict[str, Any] = reply.json()
    return form


async def test_title_alone_creates_a_draft_with_the_contract_shape(
    editor_http: httpx.AsyncClient,
) -> None:
    reply = await editor_http.post("/api/forms", json={"title": "Test-1"})
    assert reply.status_code == 201
    form = reply.json()
    assert set(form) == FORM_KEYS
    assert form["title"] == "Test-1"
    assert form["description"] == ""
    assert form["fields"] == []
    assert form["status"] == "draft"
    assert form["version"] == 0
    assert form["revision"] == 1
    assert form["publicId"] is None
    assert RFC3339.match(form["createdAt"]) and RFC3339.match(form["updatedAt"])
    again = await editor_http.get(f"/api/forms/{form['id']}")
    assert again.json() == form


async def test_fields_round_trip_in_camel_case(editor_http: httpx.AsyncClient) -> None:
    fields = [
        {"id": "consent", "type": "checkbox", "label": "I agree", "required": True},
        {
            "id": "reason",
            "type": "textarea",
            "label": "Why?",
            "helpText": "In your own words",
            "max": 500,
            "showWhen": {"field": "consent", "equals": True},
        },
    ]
    form = await create(editor_http, fields=fields)
    assert form["fields"] == [
        {"id": "consent", "type": "checkbox", "label": "I agree", "required": True},
        {
            "id": "reason",
            "type": "textarea",
            "label": "Why?",
            "required": False,
            "helpText": "In your own words",
            "max": 500.0,
            "showWhen": {"field": "consent", "equals": True},
        },
    ]


async def test_every_save_bumps_revision_and_a_stale_revision_is_refused(
    editor_http: httpx.AsyncClient,
) -> None:
    form = await create(editor_http)
    first = await editor_http.put(
        f"/api/forms/{form['id']}", json={"title": "A", "revision": form["revision"]}
    )
    assert first.status_code == 200
    assert first.json()["revision"] == form["revision"] + 1
    # A second tab still holding the old revision must not overwrite "A".
    stale = await editor_http.put(
        f"/api/forms/{form['id']}", json={"title": "B", "revision": form["revision"]}
    )
    assert stale.status_code == 409
    assert stale.json()["code"] == "stale_revision"
    assert (await editor_http.get(f"/api/forms/{form['id']}")).json()["title"] == "A"
    # Without a revision the save applies and still bumps it.
    blind = await editor_http.put(f"/api/forms/{form['id']}", json={"description": "d"})
    assert blind.status_code == 200
    assert blind.json()["revision"] == form["revision"] + 2
    assert blind.json()["title"] == "A"


async def test_publish_freezes_the_version_and_edits_only_touch_the_draft(
    editor_http: httpx.AsyncClient, app: FastAPI
) -> None:
    form = await create(editor_http, fields=[text_field("name", required=True)])
    published = (await editor_http.post(f"/api/forms/{form['id']}/publish")).json()
    assert published["status"] == "published"
    assert published["version"] == 1
    assert published["hasUnpublishedChanges"] is False
    public_id = published["publicId"]
    assert isinstance(public_id, str) and len(public_id) >= 22

    edited = await editor_http.put(
        f"/api/forms/{form['id']}",
        json={"title": "Intake v2", "fields": [text_field("name"), text_field("city")]},
    )
    body = edited.json()
    assert body["status"] == "published"
    assert body["version"] == 1
    assert body["hasUnpublishedChanges"] is True

    state: AppState = app.state.hf
    async with state.db.sessions() as session:
        v1 = (
            await session.execute(select(FormVersion).where(FormVersion.form_id == form["id"]))
        ).scalar_one()
    assert v1.version == 1 and v1.title == "Intake"
    assert [f["id"] for f in v1.fields] == ["name"]

    again = (await editor_http.post(f"/api/forms/{form['id']}/publish")).json()
    assert again["version"] == 2
    assert again["publicId"] == public_id
    assert again["hasUnpublishedChanges"] is False
    # Publishing without changes does not mint a new version.
    assert (await editor_http.post(f"/api/forms/{form['id']}/publish")).json()["version"] == 2


async def test_unpublish_returns_to_draft_and_archive_hides_from_the_list(
    editor_http: httpx.AsyncClient,
) -> None:
    form = await create(editor_http)
    await editor_http.post(f"/api/forms/{form['id']}/publish")
    unpublished = await editor_http.post(f"/api/forms/{form['id']}/unpublish")
    assert unpublished.status_code == 200
    assert unpublished.json()["status"] == "draft"

    other = await create(editor_http, title="Keep")
    assert (await editor_http.delete(f"/api/forms/{form['id']}")).status_code == 204
    listed = {f["id"] for f in (await editor_http.get("/api/forms")).json()["forms"]}
    assert other["id"] in listed and form["id"] not in listed
    archived = (await editor_http.get("/api/forms", params={"status": "archived"})).json()
    assert [f["id"] for f in archived["forms"]] == [form["id"]]
    still = await editor_http.get(f"/api/forms/{form['id']}")
    assert still.status_code == 200 and still.json()["status"] == "archived"


async def test_viewer_reads_but_may_not_write(
    app: FastAPI, staff_directory: StaffDirectory, editor_http: httpx.AsyncClient
) -> None:
    form = await create(editor_http)
    viewer = await staff_directory.user(Role.VIEWER)
    async with signed_in(app, staff_directory, viewer) as http:
        assert (await http.get(f"/api/forms/{form['id']}")).status_code == 200
        assert [f["id"] for f in (await http.get("/api/forms")).json()["forms"]] == [form["id"]]
        attempts = [
            await http.post("/api/forms", json={"title": "x"}),
            await http.put(f"/api/forms/{form['id']}", json={"title": "x"}),
            await http.delete(f"/api/forms/{form['id']}"),
            await http.post(f"/api/forms/{form['id']}/publish"),
            await http.post(f"/api/forms/{form['id']}/unpublish"),
        ]
    for reply in attempts:
        assert reply.status_code == 403
        assert reply.json()["code"] == "forbidden"


async def test_another_organisation_sees_404_everywhere(
    app: FastAPI, staff_directory: StaffDirectory, editor_http: httpx.AsyncClient
) -> None:
    form = await create(editor_http)
    outsider = await staff_directory.user(Role.ADMIN, org="other clinic")
    async with signed_in(app, staff_directory, outsider) as http:
        replies = [
            await http.get(f"/api/forms/{form['id']}"),
            await http.put(f"/api/forms/{form['id']}", json={"title": "x"}),
            await http.delete(f"/api/forms/{form['id']}"),
            await http.post(f"/api/forms/{form['id']}/publish"),
            await http.post(f"/api/forms/{form['id']}/unpublish"),
        ]
        assert (await http.get("/api/forms")).json() == {"forms": []}
    for reply in replies:
        assert reply.status_code == 404
        assert reply.json() == {"error": "Not found.", "code": "not_found"}
    assert (await editor_http.get(f"/api/forms/{form['id']}")).json()["title"] == "Intake"


async def test_signed_out_requests_are_refused(client: httpx.AsyncClient) -> None:
    reply = await client.get("/api/forms")
    assert reply.status_code == 401
    assert reply.json()["code"] == "unauthenticated"


async def test_form_actions_are_audited_with_ids_only(
    editor_http: httpx.AsyncClient, app: FastAPI
) -> None:
    form = await create(editor_http, title="Secret title 42")
    await editor_http.put(f"/api/forms/{form['id']}", json={"title": "Secret title 43"})
    await editor_http.post(f"/api/forms/{form['id']}/publish")
    state: AppState = app.state.hf
    async with state.db.sessions() as session:
        rows = (
            (
                await session.execute(
                    select(AuditEventRow).where(AuditEventRow.resource_id == form["id"])
                )
            )
            .scalars()
            .all()
        )
    assert [row.action for row in rows] == ["form.created", "form.updated", "form.published"]
    assert all(row.resource_type == "form" for row in rows)
    assert not any("Secret" in str(vars(row)) for row in rows)
