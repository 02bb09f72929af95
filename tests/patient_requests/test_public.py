"""The patient's side: a request's link works once, until it expires; its response is
linked to the request and shows the patient's name; public links work as before."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from healthforms.audit.store import verify_chains
from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from healthforms.patient_requests.service import new_token
from tests.patient_requests.helpers import (
    PATIENT_EMAIL,
    PATIENT_NAME,
    PATIENT_PHONE,
    answers,
    create_request,
    events,
    expire,
    fresh_nonce,
    open_link,
    public_id_of,
    request_row,
    response_count,
    submit,
    token_of,
)
from tests.support.apps import asgi_client
from tests.support.plaintext import sqlite_files_holding, tables_holding
from tests.support.response_factory import PublishedForm, create_form

CLOSED = "This link was already used or has expired. Contact your clinic."


def assert_private(reply: httpx.Response) -> None:
    assert reply.headers["cache-control"] == "no-store"
    assert reply.headers["referrer-policy"] == "no-referrer"


async def test_a_link_works_once_and_a_resend_gets_the_same_confirmation(
    app: FastAPI,
    db: Database,
    keys: KeyRing,
    clinic: PublishedForm,
    admin: httpx.AsyncClient,
    database_url: str,
) -> None:
    created = await create_request(admin, clinic.form_id, prefill={"smoker": "No"})
    request_id = created["request"]["id"]
    token = token_of(created["link"])

    opened = await open_link(app, token)
    assert opened.status_code == 200, opened.text
    assert_private(opened)
    body = opened.json()
    assert set(body) == {"form", "nonce", "nonceExpiresAt", "prefill", "request"}
    assert body["form"]["title"] == "New patient intake"
    assert body["prefill"] == {"smoker": "No", "name": PATIENT_NAME}
    assert body["request"] == {"expiresAt": created["request"]["expiresAt"]}
    second_phone_nonce = await fresh_nonce(app, token)

    sent = await submit(app, token, body["nonce"], answers(name=PATIENT_NAME))
    assert sent.status_code == 201, sent.text
    assert_private(sent)
    confirmation = sent.json()["confirmation"]

    # The same submission again (a phone that lost the reply): the same confirmation.
    again = await submit(app, token, body["nonce"], answers(name=PATIENT_NAME))
    assert (again.status_code, again.json()) == (200, {"confirmation": confirmation})
    # Anything else through this link: closed, and nothing stored.
    other = await submit(app, token, second_phone_nonce, answers(name="Someone Else"))
    assert other.status_code == 410, other.text
    assert other.json() == {"error": CLOSED, "code": "request_closed"}
    reopened = await open_link(app, token)
    assert reopened.status_code == 410 and reopened.json()["code"] == "request_closed"
    assert await response_count(db, clinic.form_id) == 1

    # Linked: the request names its response; the list shows whose it is.
    listed = (await admin.get(f"/api/forms/{clinic.form_id}/requests")).json()["requests"]
    (request,) = listed
    assert request["state"] == "completed" and request["completedAt"] is not None
    responses = (await admin.get(f"/api/forms/{clinic.form_id}/responses")).json()["responses"]
    (response,) = responses
    assert request["responseId"] == response["id"]
    assert response["confirmation"] == confirmation
    assert response["patient"] == {"name": PATIENT_NAME, "birthDate": "1979-03-04"}
    row = await request_row(db, request_id)
    assert row.response_id == response["id"] and row.completed_at is not None

    # Events: ids only, the patient's pseudonymised; the response and the request's
    # completion in one chain, intact.
    trail = await events(db, clinic.organization_id)
    actions = [e.action for e in trail]
    assert actions.count("request.opened") == 1
    assert actions.count("request.completed") == 1 and actions.count("response.submitted") == 1
    completed = next(e for e in trail if e.action == "request.completed")
    assert completed.resource_id == request_id
    assert json.loads(completed.detail or "{}") == {"responseId": response["id"]}
    opened_event = next(e for e in trail if e.action == "request.opened")
    assert opened_event.actor_id is None and (opened_event.ip or "").startswith("h:")
    assert (await verify_chains(db, keys)).intact
    # Neither the token nor the patient's details are stored in the clear anywhere.
    for marker in (token, "Quillfeather", PATIENT_EMAIL, "013 4477"):
        assert await tables_holding(db, marker) == [], marker
        assert sqlite_files_holding(database_url, marker) == [], marker
    assert PATIENT_PHONE not in repr([vars(e) for e in trail])


async def test_a_form_that_asks_no_name_gets_the_requests_name(
    app: FastAPI, db: Database, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    fields: list[dict[str, Any]] = [
        {"id": "reason", "type": "text", "label": "Reason for visit", "required": True},
        {"id": "born", "type": "date", "label": "Date of birth", "identifies": "birthDate"},
    ]
    form = (await create_form(db, clinic.organization_id, fields=fields))[0]
    created = await create_request(admin, form.form_id)
    token = token_of(created["link"])
    opened = await open_link(app, token)
    assert opened.json()["prefill"] == {}  # no name field to put it in
    sent = await submit(
        app, token, opened.json()["nonce"], {"reason": "Check-up", "born": "1990-05-06"}
    )
    assert sent.status_code == 201, sent.text
    (response,) = (await admin.get(f"/api/forms/{form.form_id}/responses")).json()["responses"]
    assert response["patient"] == {"name": PATIENT_NAME, "birthDate": "1990-05-06"}
    found = await admin.get("/api/responses", params={"name": "quillfeather"})
    assert [r["id"] for r in found.json()["responses"]] == [response["id"]]


async def test_the_patients_own_answers_win_over_the_requests_name(
    app: FastAPI, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    created = await create_request(admin, clinic.form_id)
    token = token_of(created["link"])
    sent = await submit(app, token, await fresh_nonce(app, token), answers(name="Zeph Quill"))
    assert sent.status_code == 201, sent.text
    (response,) = (await admin.get(f"/api/forms/{clinic.form_id}/responses")).json()["responses"]
    assert response["patient"]["name"] == "Zeph Quill"


async def test_an_expired_link_is_closed_on_the_page_and_the_api(
    app: FastAPI, db: Database, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    created = await create_request(admin, clinic.form_id)
    token = token_of(created["link"])
    nonce = await fresh_nonce(app, token)  # fetched while the link was live
    await expire(db, created["request"]["id"])
    reply = await open_link(app, token)
    assert reply.status_code == 410 and reply.json() == {"error": CLOSED, "code": "request_closed"}
    late = await submit(app, token, nonce, answers())
    assert late.status_code == 410 and late.json()["code"] == "request_closed"
    assert await response_count(db, clinic.form_id) == 0
    async with asgi_client(app) as phone:
        page = await phone.get(f"/r/{token}")
    assert page.status_code == 410
    assert "already used or has expired" in page.text
    assert_private(page)
    listed = (await admin.get(f"/api/forms/{clinic.form_id}/requests")).json()["requests"]
    assert listed[0]["state"] == "expired"


async def test_a_request_that_expires_while_the_patient_fills_it_in_stores_nothing(
    app: FastAPI, db: Database, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    """The early check passes (the row read before expiry is bypassed here by expiring
    it after the nonce was issued); the conditional UPDATE in the response's
    transaction is the last word."""
    created = await create_request(admin, clinic.form_id)
    token = token_of(created["link"])
    nonce = await fresh_nonce(app, token)
    await expire(db, created["request"]["id"])
    refused = await submit(app, token, nonce, answers())
    assert refused.status_code == 410
    # The nonce was given back: nothing half-done blocks anything.
    assert await response_count(db, clinic.form_id) == 0
    assert (await request_row(db, created["request"]["id"])).response_id is None


async def test_a_cancelled_link_is_closed(
    app: FastAPI, db: Database, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    created = await create_request(admin, clinic.form_id)
    token = token_of(created["link"])
    nonce = await fresh_nonce(app, token)
    cancelled = await admin.post(f"/api/requests/{created['request']['id']}/cancel")
    assert cancelled.status_code == 200
    assert (await open_link(app, token)).status_code == 410
    assert (await submit(app, token, nonce, answers())).status_code == 410
    async with asgi_client(app) as phone:
        page = await phone.get(f"/r/{token}")
    assert page.status_code == 410 and "already used or has expired" in page.text
    assert await response_count(db, clinic.form_id) == 0


@pytest.mark.parametrize(
    "token",
    [
        "x",
        "a" * 42,
        "a" * 44,
        "a" * 2000,
        "%00" * 20,
        "..%2F..%2Fetc",
        "a%2F" * 12,
        "ö" * 43,
        "a" * 42 + "=",
        "a" * 42 + "%20",
    ],
)
async def test_a_wrong_token_is_a_plain_404_never_a_500(app: FastAPI, token: str) -> None:
    async with asgi_client(app) as phone:
        api = await phone.get(f"/api/public/requests/{token}")
        posted = await phone.post(
            f"/api/public/requests/{token}/responses", json={"nonce": "x", "answers": {}}
        )
        page = await phone.get(f"/r/{token}")
    assert api.status_code == 404 and api.json()["code"] == "not_found"
    assert posted.status_code == 404
    assert page.status_code == 404
    if "%2F" not in token:  # a slash makes it another path (a plain 404 page)
        assert "already used or has expired" in page.text


async def test_an_unknown_token_of_the_right_shape_says_no_more_than_a_used_one(
    app: FastAPI, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    async with asgi_client(app) as phone:
        unknown = await phone.get(f"/r/{new_token()}")
    created = await create_request(admin, clinic.form_id)
    await admin.post(f"/api/requests/{created['request']['id']}/cancel")
    async with asgi_client(app) as phone:
        used = await phone.get(f"/r/{token_of(created['link'])}")
    assert (unknown.status_code, used.status_code) == (404, 410)

    def main(html: str) -> str:
        return re.sub(r"\s+", " ", html.split("<main", 1)[1].split("</main>", 1)[0])

    assert main(unknown.text) == main(used.text)


async def test_opened_is_recorded_once(
    app: FastAPI, db: Database, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    created = await create_request(admin, clinic.form_id)
    token = token_of(created["link"])
    async with asgi_client(app) as phone:
        page = await phone.get(f"/r/{token}")
    assert page.status_code == 200
    # The page's HTML alone (a link previewer) does not count as opened.
    assert (await request_row(db, created["request"]["id"])).state == "created"
    await open_link(app, token)
    first = (await request_row(db, created["request"]["id"])).opened_at
    await open_link(app, token)
    row = await request_row(db, created["request"]["id"])
    assert row.state == "opened" and row.opened_at == first
    assert len(await events(db, clinic.organization_id, "request.opened")) == 1


async def test_the_patient_page_has_no_phi_in_its_html(
    app: FastAPI, db: Database, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    created = await create_request(admin, clinic.form_id, prefill={"dob": "1979-03-04"})
    token = token_of(created["link"])
    async with asgi_client(app) as phone:
        page = await phone.get(f"/r/{token}")
    assert page.status_code == 200
    assert_private(page)
    title = page.text.split("<title>", 1)[1].split("</title>", 1)[0]
    assert title.startswith("Your form from Clinic ")
    assert 'data-request="1"' in page.text and "New patient intake" in page.text
    for marker in ("Quillfeather", PATIENT_EMAIL, "1979-03-04", token):
        assert marker not in page.text, marker


async def test_nonces_work_only_where_they_were_issued(
    app: FastAPI, db: Database, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    public_id = await public_id_of(db, clinic.form_id)
    first = token_of((await create_request(admin, clinic.form_id))["link"])
    second = token_of((await create_request(admin, clinic.form_id))["link"])
    async with asgi_client(app) as phone:
        public_nonce = (await phone.get(f"/api/public/forms/{public_id}")).json()["nonce"]
    request_nonce = await fresh_nonce(app, first)
    for token, nonce in ((first, public_nonce), (second, request_nonce)):
        refused = await submit(app, token, nonce, answers())
        assert refused.status_code == 400 and refused.json()["code"] == "nonce_invalid"
    async with asgi_client(app) as phone:
        crossed = await phone.post(
            f"/api/public/forms/{public_id}/responses",
            json={"nonce": request_nonce, "answers": answers()},
        )
    assert crossed.status_code == 400
    # Invalid answers leave the request open and its nonce usable (like public links).
    bad = await submit(app, first, request_nonce, answers(dob="not a date"))
    assert bad.status_code == 422 and set(bad.json()["fields"]) == {"dob"}
    assert (await submit(app, first, request_nonce, answers())).status_code == 201
    assert await response_count(db, clinic.form_id) == 1


async def test_public_links_keep_working_as_before(
    app: FastAPI, db: Database, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    await create_request(admin, clinic.form_id)
    public_id = await public_id_of(db, clinic.form_id)
    async with asgi_client(app) as phone:
        page = await phone.get(f"/f/{public_id}")
        assert page.status_code == 200 and "data-request" not in page.text
        nonce = (await phone.get(f"/api/public/forms/{public_id}")).json()["nonce"]
        for _ in range(2):  # a public link takes any number of responses
            sent = await phone.post(
                f"/api/public/forms/{public_id}/responses",
                json={"nonce": nonce, "answers": answers()},
            )
            assert sent.status_code in (200, 201), sent.text
            nonce = (await phone.get(f"/api/public/forms/{public_id}")).json()["nonce"]
    assert await response_count(db, clinic.form_id) == 2


async def test_a_request_for_a_form_no_longer_published_is_closed(
    app: FastAPI, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    created = await create_request(admin, clinic.form_id)
    token = token_of(created["link"])
    assert (await admin.post(f"/api/forms/{clinic.form_id}/unpublish")).status_code == 200
    assert (await open_link(app, token)).status_code == 410
    assert (await admin.post(f"/api/forms/{clinic.form_id}/publish")).status_code == 200
    assert (await open_link(app, token)).status_code == 200


async def test_deleting_the_response_deletes_the_request_that_named_the_patient(
    app: FastAPI, db: Database, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    created = await create_request(admin, clinic.form_id)
    token = token_of(created["link"])
    assert (await submit(app, token, await fresh_nonce(app, token), answers())).status_code == 201
    row = await request_row(db, created["request"]["id"])
    assert row.response_id is not None
    deleted = await admin.delete(f"/api/responses/{row.response_id}")
    assert deleted.status_code == 204, deleted.text
    # The request held the patient's name and contact details: gone with the response
    # (the admin's delete and the retention purge alike; docs/retention.md).
    assert (await admin.get(f"/api/forms/{clinic.form_id}/requests")).json()["requests"] == []
    assert (await open_link(app, token)).status_code == 404
