"""Staff's side of requests to a patient: create (a link and QR code shown once), list
(one audited view), hand over, reissue, cancel; roles, other clinics, hostile bodies."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from healthforms.crypto.keys import KeyRing, generate_key
from healthforms.db.engine import Database
from healthforms.patient_requests.models import PatientRequest
from healthforms.patient_requests.service import open_contact, qr_svg
from healthforms.responses.key_rotation import rotate_keys
from healthforms.security.principal import Role
from tests.patient_requests.helpers import (
    PATIENT_EMAIL,
    PATIENT_NAME,
    PATIENT_PHONE,
    create_request,
    events,
    expire,
    open_link,
    request_row,
    token_of,
)
from tests.support.plaintext import sqlite_files_holding, tables_holding
from tests.support.response_factory import PublishedForm, create_form, create_organization
from tests.support.response_fixtures import StaffFactory
from tests.support.staff import signed_in_client


async def test_create_shows_the_link_and_its_qr_code_once_and_stores_only_its_hash(
    app: FastAPI,
    db: Database,
    clinic: PublishedForm,
    admin: httpx.AsyncClient,
    database_url: str,
) -> None:
    reply = await admin.post(
        f"/api/forms/{clinic.form_id}/requests",
        json={
            "patientName": f"  {PATIENT_NAME} ",
            "email": PATIENT_EMAIL,
            "phone": PATIENT_PHONE,
            "prefill": {"dob": "1979-03-04"},
            "expiresInDays": 3,
        },
    )
    assert reply.status_code == 201, reply.text
    assert reply.headers["cache-control"] == "no-store"
    body = reply.json()
    request = body["request"]
    assert request["id"].startswith("req_")
    assert request["formId"] == clinic.form_id
    assert request["state"] == "created"
    assert (request["patientName"], request["email"], request["phone"]) == (
        PATIENT_NAME,
        PATIENT_EMAIL,
        PATIENT_PHONE,
    )
    assert request["sentAt"] is None and request["openedAt"] is None
    assert request["completedAt"] is None and request["responseId"] is None
    link = body["link"]
    assert link.startswith("http://testserver/r/")
    token = token_of(link)
    assert len(token) == 43 and len(base64.urlsafe_b64decode(token + "=")) == 32
    # The QR code is an SVG of exactly this link, made here (no QR decoder in the
    # suite: segno's own rendering of the link is the reference).
    assert body["qrSvg"].startswith("<svg") and body["qrSvg"] == qr_svg(link)
    assert token not in body["qrSvg"]  # in its modules, not as text

    row = await request_row(db, request["id"])
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert row.created_by is not None and row.state == "created"
    days = (row.expires_at - row.created_at).total_seconds() / 86400
    assert days == pytest.approx(3, abs=0.01)
    # The token in no form but its hash; no name, email or phone in plaintext anywhere.
    for marker in (token, "Quillfeather", PATIENT_EMAIL, "013 4477"):
        assert await tables_holding(db, marker) == [], marker
        assert sqlite_files_holding(database_url, marker) == [], marker
    # The event says who created which request of which form, and nothing else.
    (created,) = await events(db, clinic.organization_id, "request.")
    assert (created.action, created.resource_type, created.resource_id) == (
        "request.created",
        "request",
        request["id"],
    )
    assert json.loads(created.detail or "{}") == {"formId": clinic.form_id}


async def test_the_link_uses_the_configured_public_url(
    app_with: Any, clinic: PublishedForm
) -> None:
    async with (
        app_with(public_url="https://forms.clinic.example/") as other,
        signed_in_client(other, clinic.organization_id) as (http, _),
    ):
        body = await create_request(http, clinic.form_id)
    assert body["link"].startswith("https://forms.clinic.example/r/")
    assert body["qrSvg"] == qr_svg(body["link"])


async def test_a_form_that_is_not_published_cannot_be_requested(
    admin: httpx.AsyncClient,
) -> None:
    draft = await admin.post("/api/forms", json={"title": "Draft"})
    reply = await admin.post(
        f"/api/forms/{draft.json()['id']}/requests", json={"patientName": PATIENT_NAME}
    )
    assert reply.status_code == 409
    assert reply.json()["code"] == "form_not_published"


async def test_viewers_list_but_cannot_create_or_change(
    clinic: PublishedForm, admin: httpx.AsyncClient, staff: StaffFactory
) -> None:
    created = await create_request(admin, clinic.form_id)
    request_id = created["request"]["id"]
    async with staff(clinic.organization_id, Role.VIEWER) as viewer:
        refused = await viewer.post(
            f"/api/forms/{clinic.form_id}/requests", json={"patientName": "X"}
        )
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
        for action in ("reissue", "sent", "cancel"):
            reply = await viewer.post(f"/api/requests/{request_id}/{action}")
            assert reply.status_code == 403, action
        listed = await viewer.get(f"/api/forms/{clinic.form_id}/requests")
        assert listed.status_code == 200
        assert [r["patientName"] for r in listed.json()["requests"]] == [PATIENT_NAME]


async def test_another_clinic_gets_404_for_everything(
    db: Database, clinic: PublishedForm, admin: httpx.AsyncClient, staff: StaffFactory
) -> None:
    created = await create_request(admin, clinic.form_id)
    request_id = created["request"]["id"]
    other_org = await create_organization(db)
    async with staff(other_org, Role.ADMIN) as other:
        for method, path, payload in (
            ("POST", f"/api/forms/{clinic.form_id}/requests", {"patientName": "X"}),
            ("GET", f"/api/forms/{clinic.form_id}/requests", None),
            ("POST", f"/api/requests/{request_id}/reissue", {}),
            ("POST", f"/api/requests/{request_id}/sent", None),
            ("POST", f"/api/requests/{request_id}/cancel", None),
        ):
            reply = await other.request(method, path, json=payload)
            assert reply.status_code == 404, (method, path, reply.text)
            assert reply.json()["code"] == "not_found"
    assert (await request_row(db, request_id)).state == "created"


BAD_BODIES: list[tuple[object, set[str]]] = [
    (None, {"body"}),
    ([], {"body"}),
    ("Ada", {"body"}),
    (7, {"body"}),
    ({}, {"patientName"}),
    ({"patientName": ""}, {"patientName"}),
    ({"patientName": "   "}, {"patientName"}),
    ({"patientName": "x" * 201}, {"patientName"}),
    ({"patientName": 5}, {"patientName"}),
    ({"patientName": ["Ada"]}, {"patientName"}),
    ({"patientName": "Ada", "email": "not-an-email"}, {"email"}),
    ({"patientName": "Ada", "email": 12}, {"email"}),
    ({"patientName": "Ada", "phone": "call me"}, {"phone"}),
    ({"patientName": "Ada", "phone": "1" * 5000}, {"phone"}),
    ({"patientName": "Ada", "expiresInDays": 0}, {"expiresInDays"}),
    ({"patientName": "Ada", "expiresInDays": 91}, {"expiresInDays"}),
    ({"patientName": "Ada", "expiresInDays": "7"}, {"expiresInDays"}),
    ({"patientName": "Ada", "expiresInDays": True}, {"expiresInDays"}),
    ({"patientName": "Ada", "expiresInDays": 1.5}, {"expiresInDays"}),
    ({"patientName": "Ada", "expiresInDays": 10**30}, {"expiresInDays"}),
    ({"patientName": "Ada", "prefill": []}, {"prefill"}),
    ({"patientName": "Ada", "prefill": "name"}, {"prefill"}),
    ({"patientName": "Ada", "prefill": {"nope": 1}}, {"prefill.nope"}),
    ({"patientName": "Ada", "prefill": {"dob": "yesterday"}}, {"prefill.dob"}),
    ({"patientName": "Ada", "prefill": {"smoker": "Sometimes"}}, {"prefill.smoker"}),
    ({"patientName": "Ada", "prefill": {"allergies": "Latex"}}, {"prefill.allergies"}),
    ({"patientName": "Ada", "surprise": {"deep": [1, {"x": None}]}}, {"surprise"}),
]


@pytest.mark.parametrize(("body", "named"), BAD_BODIES)
async def test_a_bad_body_is_a_422_naming_the_key_never_a_500(
    clinic: PublishedForm, admin: httpx.AsyncClient, body: object, named: set[str]
) -> None:
    reply = await admin.post(f"/api/forms/{clinic.form_id}/requests", json=body)
    assert reply.status_code == 422, reply.text
    assert reply.json()["code"] == "validation_error"
    assert set(reply.json()["fields"]) == named
    # Never echoes what was sent (it may be PHI).
    assert "not-an-email" not in reply.text and "call me" not in reply.text


async def test_malformed_json_is_400_and_a_reissue_body_is_checked_too(
    clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    reply = await admin.post(
        f"/api/forms/{clinic.form_id}/requests",
        content=b'{"patientName": ',
        headers={"Content-Type": "application/json"},
    )
    assert reply.status_code == 400 and reply.json()["code"] == "bad_request"
    request_id = (await create_request(admin, clinic.form_id))["request"]["id"]
    bodies: list[object] = [[], {"expiresInDays": 0}, {"patientName": "X"}, "x"]
    for body in bodies:
        refused = await admin.post(f"/api/requests/{request_id}/reissue", json=body)
        assert refused.status_code == 422, body
    for path in ("/api/requests/nope/sent", f"/api/requests/{'r' * 300}/cancel"):
        assert (await admin.post(path)).status_code == 404


async def test_prefill_is_checked_like_answers_and_may_be_partial(
    app: FastAPI, db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    # The name field is required at submission, not in a prefill; answers are stored
    # normalised as a submission would store them (checkbox options in form order).
    created = await create_request(
        admin,
        clinic.form_id,
        prefill={"allergies": ["Pollen", "Latex"], "smoker": "Yes", "packs": "2"},
    )
    row = await request_row(db, created["request"]["id"])
    contact = open_contact(keys, row)
    assert contact is not None
    assert contact.prefill == {"allergies": ["Latex", "Pollen"], "smoker": "Yes", "packs": 2}
    opened = await open_link(app, token_of(created["link"]))
    # The patient's page starts with them, and the request's name in the name field.
    assert opened.json()["prefill"] == {**contact.prefill, "name": PATIENT_NAME}


async def test_the_list_is_newest_first_filtered_by_state_and_one_audited_view(
    db: Database, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    first = (await create_request(admin, clinic.form_id, patientName="First Patient"))["request"]
    second = (await create_request(admin, clinic.form_id, email=None, phone=""))["request"]
    assert "email" not in second and "phone" not in second
    await expire(db, first["id"])
    listed = await admin.get(f"/api/forms/{clinic.form_id}/requests")
    assert listed.status_code == 200
    assert listed.headers["cache-control"].startswith("no-store")
    rows = listed.json()["requests"]
    assert [(r["id"], r["state"]) for r in rows] == [
        (second["id"], "created"),
        (first["id"], "expired"),
    ]
    (event,) = await events(db, clinic.organization_id, "requests.listed")
    assert (event.resource_type, event.resource_id) == ("form", clinic.form_id)
    assert json.loads(event.detail or "{}") == {
        "count": 2,
        "requestIds": sorted([first["id"], second["id"]]),
    }
    by_state = {
        state: [
            r["id"]
            for r in (
                await admin.get(f"/api/forms/{clinic.form_id}/requests", params={"state": state})
            ).json()["requests"]
        ]
        for state in ("created", "expired", "completed")
    }
    assert by_state == {"created": [second["id"]], "expired": [first["id"]], "completed": []}
    for bad in ("bogus", "x" * 17):
        refused = await admin.get(f"/api/forms/{clinic.form_id}/requests", params={"state": bad})
        assert refused.status_code == 422
    # An empty list shows nobody: nothing to audit.
    empty = (await create_form(db, clinic.organization_id))[0]
    before = len(await events(db, clinic.organization_id, "requests.listed"))
    assert (await admin.get(f"/api/forms/{empty.form_id}/requests")).json() == {"requests": []}
    assert len(await events(db, clinic.organization_id, "requests.listed")) == before


async def test_states_move_only_forward_with_their_times_and_events(
    app: FastAPI, db: Database, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    created = await create_request(admin, clinic.form_id)
    request_id = created["request"]["id"]
    sent = await admin.post(f"/api/requests/{request_id}/sent")
    assert sent.status_code == 200, sent.text
    assert sent.json()["request"]["state"] == "sent"
    sent_at = sent.json()["request"]["sentAt"]
    assert sent_at is not None
    again = await admin.post(f"/api/requests/{request_id}/sent")
    assert again.status_code == 200 and again.json()["request"]["sentAt"] == sent_at

    assert (await open_link(app, token_of(created["link"]))).status_code == 200
    row = await request_row(db, request_id)
    assert row.state == "opened" and row.opened_at is not None
    late = await admin.post(f"/api/requests/{request_id}/sent")
    assert late.status_code == 409
    assert late.json() == {
        "error": late.json()["error"],
        "code": "invalid_transition",
        "state": "opened",
    }

    cancelled = await admin.post(f"/api/requests/{request_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["request"]["state"] == "cancelled"
    assert (await admin.post(f"/api/requests/{request_id}/cancel")).status_code == 200
    for action in ("reissue", "sent"):
        refused = await admin.post(f"/api/requests/{request_id}/{action}")
        assert refused.status_code == 409, action
        assert refused.json()["state"] == "cancelled"
    actions = [e.action for e in await events(db, clinic.organization_id, "request.")]
    assert actions == ["request.created", "request.sent", "request.opened", "request.cancelled"]
    (handed,) = await events(db, clinic.organization_id, "request.sent")
    assert json.loads(handed.detail or "{}") == {"channel": "handover"}


async def test_an_expired_request_cannot_be_sent_but_can_get_a_new_link(
    app: FastAPI, db: Database, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    created = await create_request(admin, clinic.form_id)
    request_id = created["request"]["id"]
    await expire(db, request_id)
    refused = await admin.post(f"/api/requests/{request_id}/sent")
    assert refused.status_code == 409 and refused.json()["state"] == "expired"
    reissued = await admin.post(f"/api/requests/{request_id}/reissue", json={"expiresInDays": 2})
    assert reissued.status_code == 201, reissued.text
    assert reissued.json()["request"]["state"] == "created"
    assert (await open_link(app, token_of(reissued.json()["link"]))).status_code == 200


async def test_a_reissue_stops_the_old_link_at_once(
    app: FastAPI, db: Database, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    created = await create_request(admin, clinic.form_id)
    request_id = created["request"]["id"]
    old = token_of(created["link"])
    assert (await open_link(app, old)).status_code == 200
    reissued = await admin.post(f"/api/requests/{request_id}/reissue")
    assert reissued.status_code == 201, reissued.text
    body = reissued.json()
    new = token_of(body["link"])
    assert new != old and body["qrSvg"] == qr_svg(body["link"])
    assert body["request"]["state"] == "created" and body["request"]["openedAt"] is None
    assert body["request"]["patientName"] == PATIENT_NAME
    assert (await open_link(app, old)).status_code == 404
    assert (await open_link(app, new)).status_code == 200
    for token in (old, new):
        assert await tables_holding(db, token) == []
    actions = [e.action for e in await events(db, clinic.organization_id, "request.")]
    assert actions == [
        "request.created",
        "request.opened",
        "request.reissued",
        "request.opened",
    ]


async def test_key_rotation_rewraps_the_sealed_contacts(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    request_id = (await create_request(admin, clinic.form_id))["request"]["id"]
    rotated = KeyRing(current=base64.b64decode(generate_key()), previous=(keys.current,))
    counts = {c.name: c for c in await rotate_keys(db, rotated, also=(PatientRequest,))}
    assert counts["patient_requests"].rewrapped >= 1  # the database is shared by a worker
    contact = open_contact(KeyRing(current=rotated.current), await request_row(db, request_id))
    assert contact is not None and contact.name == PATIENT_NAME
