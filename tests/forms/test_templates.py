"""The template gallery (docs/templates.md) and "duplicate form": every template valid,
listed, turned into a draft; a form copied into a new draft; both audited like creation."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from healthforms.audit.models import AuditEventRow
from healthforms.forms.schema import FieldType
from healthforms.forms.templates import TEMPLATES
from healthforms.forms.validation import validate_fields
from healthforms.security.principal import Role
from healthforms.state import AppState
from tests.forms.helpers import StaffDirectory, signed_in, text_field

GALLERY = ["intake", "medical_history", "consent_treatment", "hipaa_authorization", "phq9", "gad7"]


async def created_events(app: FastAPI, form_id: str) -> list[AuditEventRow]:
    state: AppState = app.state.hf
    async with state.db.sessions() as session:
        rows = await session.execute(
            select(AuditEventRow).where(
                AuditEventRow.resource_id == form_id, AuditEventRow.action == "form.created"
            )
        )
        return list(rows.scalars())


@pytest.mark.parametrize("template_id", GALLERY)
def test_every_template_is_a_valid_definition(template_id: str) -> None:
    template = TEMPLATES[template_id]
    fields = validate_fields(list(template.fields))
    # Stored as written: what the gallery shows is what the form gets.
    assert [f.to_json() for f in fields] == list(template.fields)
    assert template.title and template.description and template.summary
    ids = [f.id for f in fields]
    assert len(ids) == len(set(ids))


def test_the_gallery_holds_the_six_templates_the_clinics_asked_for() -> None:
    assert list(TEMPLATES) == GALLERY


def test_the_hipaa_authorization_holds_every_element_of_164_508() -> None:
    fields = {f["id"]: f for f in TEMPLATES["hipaa_authorization"].fields}
    required = {key for key, f in fields.items() if f.get("required")}
    # (c)(1): what, who discloses, to whom, purpose, expiry, signature and date.
    assert {"information", "discloser", "recipient_name", "purpose", "expires"} <= required
    assert {"expiry_date", "expiry_event", "signature", "signed_on"} <= required
    assert fields["signature"]["type"] == "signature" and fields["signed_on"]["type"] == "date"
    assert fields["expiry_date"]["showWhen"] == {"field": "expires", "equals": "On a date"}
    # (c)(1)(vi): a representative states their authority.
    assert fields["representative_authority"]["showWhen"]["field"] == "signer"
    # (c)(2): revocation, no conditioning, redisclosure: each acknowledged, required.
    assert "revoke" in fields["ack_revoke"]["label"]
    assert "conditioned" in fields["ack_conditioning"]["label"]
    assert "redisclosed" in fields["ack_redisclosure"]["label"]
    for ack in ("ack_revoke", "ack_conditioning", "ack_redisclosure"):
        assert fields[ack]["type"] == "checkbox" and fields[ack]["required"] is True
    assert "copy" in TEMPLATES["hipaa_authorization"].description


async def test_staff_list_the_gallery_and_read_one_template(
    app: FastAPI, staff_directory: StaffDirectory
) -> None:
    viewer = await staff_directory.user(Role.VIEWER)
    async with signed_in(app, staff_directory, viewer) as http:
        listed = await http.get("/api/form-templates")
        one = await http.get("/api/form-templates/gad7")
        missing = await http.get("/api/form-templates/nope")
    assert listed.status_code == 200
    templates = listed.json()["templates"]
    assert [t["id"] for t in templates] == GALLERY
    assert set(templates[0]) == {"id", "title", "description", "fieldCount"}
    assert {t["id"]: t["fieldCount"] for t in templates}["phq9"] == 12
    assert one.status_code == 200
    assert one.json()["fields"] == list(TEMPLATES["gad7"].fields)
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


async def test_the_gallery_needs_a_signed_in_member(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/form-templates")).status_code == 401


async def test_a_draft_is_created_from_a_template_and_audited_naming_it(
    app: FastAPI, editor_http: httpx.AsyncClient
) -> None:
    reply = await editor_http.post("/api/forms", json={"template": "phq9"})
    assert reply.status_code == 201, reply.text
    form = reply.json()
    assert form["title"] == TEMPLATES["phq9"].title
    assert form["description"] == TEMPLATES["phq9"].description
    assert form["fields"] == list(TEMPLATES["phq9"].fields)
    assert form["status"] == "draft" and form["version"] == 0
    named = await editor_http.post(
        "/api/forms", json={"template": "gad7", "title": "Anxiety check", "description": "Hi"}
    )
    assert named.status_code == 201
    assert (named.json()["title"], named.json()["description"]) == ("Anxiety check", "Hi")
    assert [f["id"] for f in named.json()["fields"]][-1] == "gad7_total"
    (event,) = await created_events(app, form["id"])
    assert json.loads(event.detail or "{}") == {"template": "phq9"}
    # The form is the clinic's own copy: editing it leaves the template alone.
    edited = await editor_http.put(
        f"/api/forms/{form['id']}", json={"fields": [text_field("only")]}
    )
    assert edited.status_code == 200
    assert len(TEMPLATES["phq9"].fields) == 12


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ({"template": "nope"}, "template"),
        ({"template": None}, "template"),
        ({"template": ["phq9"]}, "template"),
        ({"template": "phq9", "fields": [text_field("x")]}, "fields"),
        ({"template": "phq9", "title": ""}, "title"),
    ],
)
async def test_a_bad_template_request_is_a_422_naming_the_key(
    editor_http: httpx.AsyncClient, body: dict[str, Any], key: str
) -> None:
    reply = await editor_http.post("/api/forms", json=body)
    assert reply.status_code == 422, reply.text
    assert reply.json()["code"] == "validation_error"
    assert set(reply.json()["fields"]) == {key}


async def test_post_forms_keeps_its_documented_shape(editor_http: httpx.AsyncClient) -> None:
    reply = await editor_http.post(
        "/api/forms", json={"title": "Test-1", "fields": [text_field("name")]}
    )
    assert reply.status_code == 201
    assert reply.json()["fields"] == [text_field("name") | {"required": False}]


async def test_duplicate_copies_the_latest_fields_into_a_new_draft(
    app: FastAPI, editor_http: httpx.AsyncClient
) -> None:
    source = (await editor_http.post("/api/forms", json={"template": "phq9"})).json()
    assert (await editor_http.post(f"/api/forms/{source['id']}/publish")).status_code == 200
    # A later, unpublished edit is part of what is copied: the builder's latest state.
    fields = [*source["fields"][:-1], {**source["fields"][-1], "label": "PHQ-9 score"}]
    saved = await editor_http.put(f"/api/forms/{source['id']}", json={"fields": fields})
    assert saved.status_code == 200, saved.text

    reply = await editor_http.post(f"/api/forms/{source['id']}/duplicate")
    assert reply.status_code == 201, reply.text
    copy = reply.json()
    assert copy["id"] != source["id"]
    assert copy["title"] == f"{source['title']} (copy)"
    assert copy["description"] == source["description"]
    assert copy["fields"] == fields
    assert (copy["status"], copy["version"], copy["revision"], copy["publicId"]) == (
        "draft", 0, 1, None,
    )  # fmt: skip
    (event,) = await created_events(app, copy["id"])
    assert json.loads(event.detail or "{}") == {"duplicateOf": source["id"]}
    # The source is untouched.
    assert (await editor_http.get(f"/api/forms/{source['id']}")).json()["status"] == "published"


async def test_a_long_title_is_cut_so_the_copy_fits(editor_http: httpx.AsyncClient) -> None:
    source = (await editor_http.post("/api/forms", json={"title": "T" * 200})).json()
    copy = (await editor_http.post(f"/api/forms/{source['id']}/duplicate")).json()
    assert len(copy["title"]) == 200 and copy["title"].endswith("T (copy)")


async def test_duplicate_keeps_the_retention_period_only_for_an_admin(
    app: FastAPI, staff_directory: StaffDirectory, editor: Any, editor_http: httpx.AsyncClient
) -> None:
    admin = await staff_directory.user(Role.ADMIN)
    async with signed_in(app, staff_directory, admin) as http:
        source = (
            await http.post("/api/forms", json={"title": "Kept", "retentionDays": 2192})
        ).json()
        by_admin = (await http.post(f"/api/forms/{source['id']}/duplicate")).json()
    assert by_admin["retentionDays"] == 2192
    (event,) = await created_events(app, by_admin["id"])
    assert json.loads(event.detail or "{}") == {
        "duplicateOf": source["id"], "retentionDays": 2192,
    }  # fmt: skip


async def test_viewers_may_not_duplicate_and_other_clinics_see_404(
    app: FastAPI, staff_directory: StaffDirectory, editor_http: httpx.AsyncClient
) -> None:
    source = (await editor_http.post("/api/forms", json={"template": "intake"})).json()
    viewer = await staff_directory.user(Role.VIEWER)
    async with signed_in(app, staff_directory, viewer) as http:
        assert (await http.post(f"/api/forms/{source['id']}/duplicate")).status_code == 403
        assert (await http.post("/api/forms", json={"template": "intake"})).status_code == 403
    outsider = await staff_directory.user(Role.ADMIN, org="other clinic")
    async with signed_in(app, staff_directory, outsider) as http:
        refused = await http.post(f"/api/forms/{source['id']}/duplicate")
        assert refused.status_code == 404
        assert refused.json() == {"error": "Not found.", "code": "not_found"}
        assert (await http.post("/api/forms/frm_nope/duplicate")).status_code == 404
    listed = (await editor_http.get("/api/forms")).json()["forms"]
    assert [f["id"] for f in listed] == [source["id"]]


def test_score_fields_of_the_templates_only_add_scored_choices() -> None:
    for template in TEMPLATES.values():
        for field in validate_fields(list(template.fields)):
            if field.type is FieldType.SCORE:
                assert field.score is not None and not field.score.show_patient
