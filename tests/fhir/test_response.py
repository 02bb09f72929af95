"""GET /api/responses/{id}/fhir and the NDJSON export: typed answers, attachments,
scores, audit events, roles, and a response that will not decrypt."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from healthforms.crypto.envelope import response_aad, seal_json
from healthforms.crypto.keys import KeyRing
from healthforms.db.base import new_id
from healthforms.db.engine import Database
from healthforms.fhir.response import questionnaire_response, webhook_body_source
from healthforms.forms.models import Form, FormVersion
from healthforms.forms.schema import fields_from_json
from healthforms.forms.scores import calculate_scores, scores_json
from healthforms.responses.models import ResponseRow
from healthforms.security.principal import Role
from healthforms.state import AppState
from healthforms.uploads.models import Upload
from tests.fhir.helpers import (
    EVERY_FIELD,
    all_items,
    audit_rows,
    publish_form,
    valid_questionnaire,
    valid_response,
)
from tests.support.response_factory import (
    PublishedForm,
    create_organization,
    evidence,
    signature_data_url,
)
from tests.support.response_fixtures import StaffFactory

SIGNATURE = signature_data_url()


def every_answer() -> dict[str, Any]:
    return {
        "name": "Zoë Ångström",
        "story": "Back pain since May",
        "email": "zoe@example.org",
        "phone": "+1 555 0100",
        "dob": "1984-02-29",
        "age": 30,
        "weight": 72.5,
        "color": "Blue  two",
        "smoker": "Yes",
        "allergies": ["Latex", "Pollen"],
        "consent": True,
        "sig": SIGNATURE,
        "c_eq": "Marlboro",
        "c_ne": "2010",
        "c_multi": "Hives",
        "c_text": "Lower back",
        "c_all": "2020-05-01",
        "c_any": "Because",
        "c_all_ne": "Blue",
        "q1": "Several days",
        "q2": ["Sleep", "Food"],
        "q3": "Bad",
    }


async def store_response(
    db: Database, keys: KeyRing, form_id: str, answers: dict[str, Any], *, files: int = 0
) -> tuple[str, list[str]]:
    """A response to the form's current version, sealed as submissions seals it (with
    its calculated scores), and `files` uploaded photos attached to it."""
    async with db.sessions() as session:
        form = (await session.execute(select(Form).where(Form.id == form_id))).scalar_one()
        version = (
            await session.execute(
                select(FormVersion).where(
                    FormVersion.form_id == form_id, FormVersion.version == form.version
                )
            )
        ).scalar_one()
    response_id = new_id("rsp_")
    upload_ids = [new_id("upl_") for _ in range(files)]
    if upload_ids:
        answers = {**answers, "photo": upload_ids}
    fields = fields_from_json(version.fields)
    scores = scores_json(calculate_scores(fields, answers, set(answers)))
    signatures = {"sig": evidence(answers)["signature"]}
    payload = {"answers": answers, "signatures": signatures, "scores": scores}
    sealed = seal_json(keys, payload, response_aad(response_id, form_id))
    async with db.sessions() as session, session.begin():
        session.add(
            ResponseRow(
                id=response_id,
                organization_id=form.organization_id,
                form_id=form_id,
                form_version_id=version.id,
                form_version=version.version,
                nonce_id=secrets.token_hex(16),
                answers_digest=secrets.token_hex(32),
                confirmation=secrets.token_hex(6).upper(),
                ciphertext=sealed.ciphertext,
                wrapped_key=sealed.wrapped_key,
                key_id=sealed.key_id,
                submitted_at=datetime(2026, 11, 25, 19, 54, 37, tzinfo=UTC),
                language="es",
            )
        )
        await session.flush()
        for upload_id in upload_ids:
            session.add(
                Upload(
                    id=upload_id,
                    organization_id=form.organization_id,
                    form_id=form_id,
                    field_id="photo",
                    scope="test",
                    nonce_id=secrets.token_hex(16),
                    response_id=response_id,
                    media_type="image/jpeg",
                    size_bytes=12345,
                    width=10,
                    height=10,
                )
            )
    return response_id, upload_ids


async def test_a_response_exports_as_a_valid_questionnaire_response_with_typed_answers(
    db: Database, keys: KeyRing, admin: httpx.AsyncClient
) -> None:
    form_id = await publish_form(admin, EVERY_FIELD)
    response_id, uploads = await store_response(db, keys, form_id, every_answer(), files=2)

    reply = await admin.get(f"/api/responses/{response_id}/fhir")

    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/fhir+json")
    assert reply.headers["cache-control"] == "no-store"
    body = reply.json()
    valid_response(body)
    assert body["questionnaire"] == f"http://testserver/fhir/Questionnaire/{form_id}|1"
    assert body["status"] == "completed"
    assert body["authored"] == "2026-11-25T19:54:37Z"
    assert body["language"] == "es"
    assert body["identifier"]["value"] == response_id
    items = all_items(body["item"])
    answers: dict[str, Any] = {link: item.get("answer") for link, item in items.items()}
    assert answers["name"] == [{"valueString": "Zoë Ångström"}]
    assert answers["story"] == [{"valueString": "Back pain since May"}]
    assert answers["email"] == [{"valueString": "zoe@example.org"}]
    assert answers["dob"] == [{"valueDate": "1984-02-29"}]
    assert answers["age"] == [{"valueDecimal": 30}]
    assert answers["weight"] == [{"valueDecimal": 72.5}]
    assert answers["color"] == [{"valueCoding": {"code": "option-2", "display": "Blue  two"}}]
    assert answers["smoker"] == [{"valueCoding": {"code": "Yes", "display": "Yes"}}]
    assert answers["allergies"] == [
        {"valueCoding": {"code": "Latex", "display": "Latex"}},
        {"valueCoding": {"code": "Pollen", "display": "Pollen"}},
    ]
    assert answers["consent"] == [{"valueBoolean": True}]
    # The signature inline, with its size, SHA-1 hash and when it was signed.
    png = base64.b64decode(SIGNATURE.split(",", 1)[1])
    signature = answers["sig"][0]["valueAttachment"]
    assert signature["contentType"] == "image/png"
    assert base64.b64decode(signature["data"]) == png
    assert signature["size"] == len(png)
    assert signature["hash"] == base64.b64encode(hashlib.sha1(png).digest()).decode()  # noqa: S324
    assert signature["creation"] == "2026-11-25T19:54:37Z"
    # Files by reference to the staff file endpoint (each read of one is audited there).
    assert [a["valueAttachment"] for a in answers["photo"]] == [
        {
            "contentType": "image/jpeg",
            "url": f"http://testserver/api/responses/{response_id}/files/{upload}",
            "size": 12345,
            "title": f"photo-{upload[-6:]}",
        }
        for upload in uploads
    ]
    # Scores from the sealed results: 1 + (1.5 + 2) x 2 = 8; 1 x 3 = 3 (an integer item).
    assert answers["total"] == [{"valueDecimal": 8}]
    assert answers["whole"] == [{"valueInteger": 3}]
    # Pages nest like the Questionnaire's groups; blocks and unanswered fields are absent.
    assert [i["linkId"] for i in items["page2"]["item"]] == ["q1", "q2", "total"]
    assert "intro" not in items and "doc" not in items and "name.help" not in items


async def test_the_response_nests_exactly_like_its_questionnaire(
    db: Database, keys: KeyRing, admin: httpx.AsyncClient
) -> None:
    form_id = await publish_form(admin, EVERY_FIELD)
    response_id, _ = await store_response(db, keys, form_id, every_answer())
    questionnaire = (await admin.get(f"/api/forms/{form_id}/fhir")).json()
    response = (await admin.get(f"/api/responses/{response_id}/fhir")).json()
    valid_questionnaire(questionnaire)

    def paths(items: list[dict[str, Any]], prefix: str = "") -> set[str]:
        found: set[str] = set()
        for item in items:
            path = f"{prefix}/{item['linkId']}"
            found.add(path)
            found |= paths(item.get("item") or [], path)
        return found

    assert paths(response["item"]) <= paths(questionnaire["item"])
    # Each answer's type is its item's type.
    kinds = {link: item["type"] for link, item in all_items(questionnaire["item"]).items()}
    expected = {
        "string": "valueString", "text": "valueString", "date": "valueDate",
        "decimal": "valueDecimal", "integer": "valueInteger", "choice": "valueCoding",
        "boolean": "valueBoolean", "attachment": "valueAttachment",
    }  # fmt: skip
    for link, item in all_items(response["item"]).items():
        for answer in item.get("answer") or []:
            assert list(answer) == [expected[kinds[link]]], link


async def test_the_read_is_audited_as_a_phi_read_like_the_staff_read(
    db: Database, keys: KeyRing, admin: httpx.AsyncClient
) -> None:
    form_id = await publish_form(admin, EVERY_FIELD)
    response_id, _ = await store_response(db, keys, form_id, every_answer())

    assert (await admin.get(f"/api/responses/{response_id}/fhir")).status_code == 200

    events = await audit_rows(db, "response.viewed", response_id)
    assert [(e.outcome, e.resource_type) for e in events] == [("success", "response")]
    assert json.loads(events[0].detail or "{}") == {"format": "fhir"}
    assert "Zoë" not in (events[0].detail or "")


async def test_an_unreadable_response_is_a_409_and_an_audited_failure(
    db: Database, keys: KeyRing, admin: httpx.AsyncClient
) -> None:
    form_id = await publish_form(admin, EVERY_FIELD)
    response_id, _ = await store_response(db, keys, form_id, every_answer())
    async with db.sessions() as session, session.begin():
        await session.execute(
            update(ResponseRow).where(ResponseRow.id == response_id).values(ciphertext=b"x" * 64)
        )

    reply = await admin.get(f"/api/responses/{response_id}/fhir")

    assert reply.status_code == 409 and reply.json()["code"] == "response_unreadable"
    events = await audit_rows(db, "response.viewed", response_id)
    assert [e.outcome for e in events] == ["failure"]


async def test_the_ndjson_export_streams_one_resource_per_line_audited_once(
    db: Database, keys: KeyRing, admin: httpx.AsyncClient
) -> None:
    form_id = await publish_form(admin, EVERY_FIELD)
    ids = [(await store_response(db, keys, form_id, every_answer(), files=n))[0] for n in range(3)]
    async with db.sessions() as session, session.begin():
        await session.execute(
            update(ResponseRow).where(ResponseRow.id == ids[1]).values(ciphertext=b"x" * 64)
        )

    reply = await admin.get(f"/api/forms/{form_id}/responses/fhir")

    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/fhir+ndjson")
    assert reply.headers["cache-control"] == "no-store"
    assert reply.headers["content-disposition"].startswith("attachment;")
    lines = [json.loads(line) for line in reply.text.splitlines()]
    assert len(lines) == 3
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        by_kind.setdefault(line["resourceType"], []).append(line)
    for body in by_kind["QuestionnaireResponse"]:
        valid_response(body)
    assert sorted(b["identifier"]["value"] for b in by_kind["QuestionnaireResponse"]) == sorted(
        [ids[0], ids[2]]
    )
    # Each line has its own response's files (read for the batch at once), and only them.
    for body in by_kind["QuestionnaireResponse"]:
        photos = all_items(body["item"]).get("photo", {}).get("answer", [])
        response_id = body["identifier"]["value"]
        assert len(photos) == (2 if response_id == ids[2] else 0)
        for photo in photos:
            assert f"/api/responses/{response_id}/files/upl_" in photo["valueAttachment"]["url"]
    # The one that will not decrypt says so by id, never silently missing.
    assert by_kind["OperationOutcome"][0]["issue"][0]["diagnostics"] == (
        f"response {ids[1]} could not be decrypted"
    )
    events = await audit_rows(db, "responses.exported", form_id)
    assert len(events) == 1
    detail = json.loads(events[0].detail or "{}")
    assert detail["format"] == "fhir-ndjson" and detail["count"] == 3
    assert sorted(detail["responseIds"]) == sorted(ids)


async def test_the_ndjson_export_keeps_the_lists_filters(
    db: Database, keys: KeyRing, admin: httpx.AsyncClient
) -> None:
    form_id = await publish_form(admin, EVERY_FIELD)
    await store_response(db, keys, form_id, every_answer())

    reply = await admin.get(f"/api/forms/{form_id}/responses/fhir?status=filed")

    assert reply.status_code == 200 and reply.text == ""
    detail = json.loads((await audit_rows(db, "responses.exported", form_id))[0].detail or "{}")
    assert detail["count"] == 0


@pytest.mark.parametrize("role", [Role.VIEWER])
async def test_roles_and_organisations_match_the_read_and_export_endpoints(
    role: Role,
    db: Database,
    keys: KeyRing,
    staff: StaffFactory,
    clinic: PublishedForm,
    admin: httpx.AsyncClient,
) -> None:
    form_id = await publish_form(admin, EVERY_FIELD)
    response_id, _ = await store_response(db, keys, form_id, every_answer())
    async with staff(clinic.organization_id, role) as viewer:
        # A viewer reads a response (as GET /api/responses/{id}), never exports.
        assert (await viewer.get(f"/api/responses/{response_id}/fhir")).status_code == 200
        refused = await viewer.get(f"/api/forms/{form_id}/responses/fhir")
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    async with staff(clinic.organization_id, Role.EDITOR) as editor:
        assert (await editor.get(f"/api/forms/{form_id}/responses/fhir")).status_code == 200
    other = await create_organization(db)
    async with staff(other, Role.ADMIN) as stranger:
        for path in (f"/api/responses/{response_id}/fhir", f"/api/forms/{form_id}/responses/fhir"):
            reply = await stranger.get(path)
            assert reply.status_code == 404 and reply.json()["code"] == "not_found", path
    assert len(await audit_rows(db, "responses.exported", form_id)) == 1  # the editor's only


async def test_the_builder_for_webhooks_gives_the_same_resource(
    app: FastAPI, db: Database, keys: KeyRing, admin: httpx.AsyncClient, clinic: PublishedForm
) -> None:
    form_id = await publish_form(admin, EVERY_FIELD)
    response_id, _ = await store_response(db, keys, form_id, every_answer())
    state: AppState = app.state.hf
    over_http = (await admin.get(f"/api/responses/{response_id}/fhir")).json()

    async with db.sessions() as session:
        built = await questionnaire_response(
            session, state, clinic.organization_id, response_id, base_url="http://testserver"
        )

    assert built == over_http


async def test_a_cross_site_ndjson_export_is_refused_like_the_csv_export(
    db: Database, keys: KeyRing, admin: httpx.AsyncClient
) -> None:
    form_id = await publish_form(admin, EVERY_FIELD)
    await store_response(db, keys, form_id, every_answer())

    reply = await admin.get(
        f"/api/forms/{form_id}/responses/fhir", headers={"Sec-Fetch-Site": "cross-site"}
    )

    assert reply.status_code == 403 and reply.json()["code"] == "csrf_invalid"
    assert await audit_rows(db, "responses.exported", form_id) == []


async def test_hidden_and_blank_fields_have_no_item_and_an_incomplete_score_no_answer(
    db: Database, keys: KeyRing, admin: httpx.AsyncClient
) -> None:
    form_id = await publish_form(admin, EVERY_FIELD)
    # Not a smoker: the page of q1, q2 and their score is hidden; q3 answered.
    answers = {"name": "Al", "consent": False, "smoker": "No", "q3": "Good"}
    response_id, _ = await store_response(db, keys, form_id, answers)

    body = (await admin.get(f"/api/responses/{response_id}/fhir")).json()

    valid_response(body)
    items = all_items(body["item"])
    assert set(items) == {"name", "consent", "smoker", "page3", "q3", "whole"}
    assert items["consent"]["answer"] == [{"valueBoolean": False}]  # an unticked box is an answer
    assert items["whole"]["answer"] == [{"valueInteger": 0}]


async def test_the_webhook_body_source_gives_the_resource_or_none(
    db: Database, keys: KeyRing, admin: httpx.AsyncClient, clinic: PublishedForm
) -> None:
    form_id = await publish_form(admin, EVERY_FIELD)
    response_id, _ = await store_response(db, keys, form_id, every_answer())
    broken, _ = await store_response(db, keys, form_id, every_answer())
    async with db.sessions() as session, session.begin():
        await session.execute(
            update(ResponseRow).where(ResponseRow.id == broken).values(ciphertext=b"x" * 64)
        )
    over_http = (await admin.get(f"/api/responses/{response_id}/fhir")).json()
    source = webhook_body_source("http://testserver")
    other = await create_organization(db)

    async with db.sessions() as session:
        assert await source(session, keys, clinic.organization_id, response_id) == over_http
        assert await source(session, keys, other, response_id) is None  # not theirs
        assert await source(session, keys, clinic.organization_id, broken) is None
        assert await source(session, keys, clinic.organization_id, "rsp_gone") is None
