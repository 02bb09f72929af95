"""Public forms: the published version with a nonce, validated submissions, idempotency."""

from __future__ import annotations

import base64
import io
import re
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image
from redis.asyncio import Redis
from sqlalchemy import select

from healthforms.audit.models import AuditEventRow
from healthforms.state import AppState
from healthforms.submissions import nonces
from tests.submissions.helpers import (
    SIGNATURE,
    count_rows,
    fetch_nonce,
    good_answers,
    open_payload,
    publish,
    stored_rows,
    submit,
)

CONFIRMATION = re.compile(r"^[A-Z2-9]{10}$")


async def test_get_serves_the_published_version_with_a_fresh_nonce(
    editor_http: httpx.AsyncClient, client: httpx.AsyncClient, redis_client: Redis, app: FastAPI
) -> None:
    form = await publish(editor_http)
    reply = await client.get(f"/api/public/forms/{form['publicId']}")
    assert reply.status_code == 200
    assert reply.headers["cache-control"] == "no-store"
    body = reply.json()
    assert set(body) == {"form", "nonce", "nonceExpiresAt"}
    assert body["form"] == {
        "title": "Intake",
        "description": "",
        "fields": form["fields"],
        "version": 1,
    }
    assert re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$", body["nonceExpiresAt"])
    nonce_id = body["nonce"].split(".")[0]
    state: AppState = app.state.hf
    key = state.redis.key(f"nonce:{{{form['publicId']}}}:{nonce_id}")
    # Issuing writes nothing: no key until the nonce is submitted (MAC + expiry suffice).
    assert await redis_client.exists(key) == 0
    expires = datetime.fromisoformat(body["nonceExpiresAt"].replace("Z", "+00:00"))
    assert 1790 <= (expires - datetime.now(UTC)).total_seconds() <= 1800
    second = await client.get(f"/api/public/forms/{form['publicId']}")
    assert second.json()["nonce"] != body["nonce"]


async def test_unknown_unpublished_and_archived_links_are_404(
    editor_http: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    assert (await client.get("/api/public/forms/nope")).status_code == 404
    form = await publish(editor_http)
    public_id = form["publicId"]
    nonce = await fetch_nonce(client, public_id)
    await editor_http.post(f"/api/forms/{form['id']}/unpublish")
    assert (await client.get(f"/api/public/forms/{public_id}")).status_code == 404
    assert (await submit(client, public_id, nonce, good_answers())).status_code == 404
    await editor_http.post(f"/api/forms/{form['id']}/publish")
    assert (await client.get(f"/api/public/forms/{public_id}")).status_code == 200
    await editor_http.delete(f"/api/forms/{form['id']}")
    reply = await client.get(f"/api/public/forms/{public_id}")
    assert reply.status_code == 404
    assert reply.json()["code"] == "not_found"


async def test_submission_is_stored_sealed_with_its_version_and_audited(
    editor_http: httpx.AsyncClient, client: httpx.AsyncClient, app: FastAPI
) -> None:
    form = await publish(editor_http)
    nonce = await fetch_nonce(client, form["publicId"])
    answers = good_answers(
        email="ada@example.org",
        phone="+44 20 7946 0958",
        age="42",
        dob="1983-04-05",
        sex="F",
        allergies=["dust"],
        notes="Röntgen 🙂",
        code="ABC-12",
        sig=SIGNATURE,
    )
    reply = await client.post(
        f"/api/public/forms/{form['publicId']}/responses",
        json={"nonce": nonce, "answers": answers},
        headers={"user-agent": "PhoneBrowser/1.0"},
    )
    assert reply.status_code == 201, reply.text
    confirmation = reply.json()["confirmation"]
    assert CONFIRMATION.match(confirmation)
    assert reply.json() == {"confirmation": confirmation}

    (row,) = await stored_rows(app, form["id"])
    assert row.form_version == 1
    assert row.confirmation == confirmation
    assert row.nonce_id == nonce.split(".")[0]
    payload = open_payload(app, row)
    assert payload["answers"] == {**answers, "age": 42}
    evidence = payload["signatures"]["sig"]
    assert set(evidence) == {"versionHash", "answersHash", "signedAt", "ip", "userAgent"}
    assert evidence["ip"] == "203.0.113.10"
    assert evidence["userAgent"] == "PhoneBrowser/1.0"
    assert re.match(r"^[0-9a-f]{64}$", evidence["versionHash"])

    state: AppState = app.state.hf
    async with state.db.sessions() as session:
        events = (
            (
                await session.execute(
                    select(AuditEventRow).where(
                        AuditEventRow.action == "response.submitted",
                        AuditEventRow.organization_id == row.organization_id,
                    )
                )
            )
            .scalars()
            .all()
        )
    assert [(e.resource_type, e.resource_id, e.organization_id) for e in events] == [
        ("response", row.id, row.organization_id)
    ]


async def test_resend_gets_the_same_confirmation_and_changed_answers_409(
    editor_http: httpx.AsyncClient, client: httpx.AsyncClient, app: FastAPI
) -> None:
    form = await publish(editor_http)
    nonce = await fetch_nonce(client, form["publicId"])
    first = await submit(client, form["publicId"], nonce, good_answers())
    assert first.status_code == 201
    again = await submit(client, form["publicId"], nonce, good_answers())
    assert again.status_code == 200
    assert again.json() == first.json()
    changed = await submit(client, form["publicId"], nonce, good_answers(name="Someone Else"))
    assert changed.status_code == 409
    assert changed.json()["code"] == "nonce_used"
    assert await count_rows(app, form["id"]) == 1


async def test_invalid_answers_leave_the_nonce_usable(
    editor_http: httpx.AsyncClient, client: httpx.AsyncClient, app: FastAPI
) -> None:
    form = await publish(editor_http)
    nonce = await fetch_nonce(client, form["publicId"])
    bad = await submit(client, form["publicId"], nonce, good_answers(email="not-an-email"))
    assert bad.status_code == 422
    assert bad.json()["code"] == "validation_error"
    assert set(bad.json()["fields"]) == {"email"}
    assert "not-an-email" not in bad.text
    good = await submit(client, form["publicId"], nonce, good_answers())
    assert good.status_code == 201
    assert await count_rows(app, form["id"]) == 1


async def test_forged_expired_garbled_and_foreign_nonces_are_400(
    editor_http: httpx.AsyncClient, client: httpx.AsyncClient, app: FastAPI
) -> None:
    form = await publish(editor_http)
    other = await publish(editor_http, title="Other")
    public_id = form["publicId"]
    state: AppState = app.state.hf
    genuine = await fetch_nonce(client, public_id)
    nonce_id, expiry, mac = genuine.split(".")
    expired, _ = nonces.mint(state.keys, public_id, ttl_s=-5)
    candidates: list[Any] = [
        f"{nonce_id}.{expiry}.{mac[:-2]}AA",  # forged MAC
        f"{nonce_id}.{int(expiry) + 3600}.{mac}",  # extended expiry
        f"{'A' * 22}.{expiry}.{mac}",  # another id
        await fetch_nonce(client, other["publicId"]),  # another form's nonce
        expired,
        "",
        "a.b.c",
        "x" * 5000,
        "\u00e9\u00e9.1.\u00e9",
        12345,
        None,
    ]
    for candidate in candidates:
        reply = await submit(client, public_id, candidate, good_answers())
        assert reply.status_code == 400, candidate
        assert reply.json()["code"] == "nonce_invalid"
    bodies: list[Any] = [{"answers": good_answers()}, [], "text"]
    for body in bodies:
        reply = await client.post(f"/api/public/forms/{public_id}/responses", json=body)
        assert reply.status_code == 400
    malformed = await client.post(
        f"/api/public/forms/{public_id}/responses",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert malformed.status_code == 400
    assert await count_rows(app, form["id"]) == 0
    # The genuine nonce still works after all that.
    assert (await submit(client, public_id, genuine, good_answers())).status_code == 201


def _png_data_url(width: int, height: int, *, noisy: bool = False) -> str:
    image = Image.effect_noise((width, height), 64) if noisy else Image.new("1", (width, height))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def _corrupt_png() -> str:
    raw = bytearray(base64.b64decode(_png_data_url(64, 64, noisy=True).split(",", 1)[1]))
    raw[-20:-12] = b"\x00" * 8  # inside the image data: the header still reads
    return "data:image/png;base64," + base64.b64encode(bytes(raw)).decode()


BAD_ANSWERS: list[tuple[str, dict[str, Any], str]] = [
    ("required missing", {"name": ""}, "name"),
    ("required whitespace", {"name": "   "}, "name"),
    ("text not a string", {"name": 5}, "name"),
    ("text too long", {"name": "x" * 101}, "name"),
    ("textarea too long", {"notes": "x" * 51}, "notes"),
    ("pattern mismatch", {"code": "abc-12"}, "code"),
    ("email", {"email": "a@b"}, "email"),
    ("email with space", {"email": "a b@example.org"}, "email"),
    ("phone letters", {"phone": "call me"}, "phone"),
    ("phone too short", {"phone": "12345"}, "phone"),
    ("number not numeric", {"age": "forty"}, "age"),
    ("number bool", {"age": True}, "age"),
    ("number below min", {"age": -1}, "age"),
    ("number above max", {"age": 131}, "age"),
    ("date format", {"dob": "05/04/1983"}, "dob"),
    ("date impossible", {"dob": "2023-02-30"}, "dob"),
    ("select outside options", {"sex": "Q"}, "sex"),
    ("radio outside options", {"smoker": "sometimes"}, "smoker"),
    ("checkbox list outside options", {"allergies": ["cats"]}, "allergies"),
    ("checkbox list not a list", {"allergies": "dust"}, "allergies"),
    ("checkbox list repeated", {"allergies": ["dust", "dust"]}, "allergies"),
    ("consent not ticked", {"consent": False}, "consent"),
    ("consent not a bool", {"consent": "yes"}, "consent"),
    ("signature not a data url", {"sig": "http://example.org/x.png"}, "sig"),
    ("signature not png", {"sig": "data:image/png;base64,R0lGODlhAQABAAAAACw="}, "sig"),
    ("signature bad base64", {"sig": "data:image/png;base64,!!!"}, "sig"),
    ("signature too large", {"sig": SIGNATURE + "A" * (256 * 1024)}, "sig"),
    # A few KiB that claim 5 megapixels (a decompression bomb for the PDF renderer).
    ("signature canvas too large", {"sig": _png_data_url(5000, 1000)}, "sig"),
    ("signature truncated", {"sig": _png_data_url(64, 64, noisy=True)[: 22 + 4 * 400]}, "sig"),
    ("signature corrupt", {"sig": _corrupt_png()}, "sig"),
    ("unknown field", {"shoeSize": 44}, "shoeSize"),
    ("shown required enforced", {"smoker": "yes"}, "packs"),
    ("shown checkbox condition enforced", {"allergies": ["nuts"]}, "nutsDetail"),
]


@pytest.mark.parametrize(
    ("overrides", "offender"),
    [pytest.param(o, f, id=name) for name, o, f in BAD_ANSWERS],
)
async def test_each_answer_rule_is_422_naming_the_field(
    editor_http: httpx.AsyncClient,
    client: httpx.AsyncClient,
    overrides: dict[str, Any],
    offender: str,
) -> None:
    form = await publish(editor_http)
    nonce = await fetch_nonce(client, form["publicId"])
    reply = await submit(client, form["publicId"], nonce, good_answers(**overrides))
    assert reply.status_code == 422, reply.text
    body = reply.json()
    assert body["code"] == "validation_error"
    assert list(body["fields"]) == [offender]


async def test_hidden_fields_are_neither_required_nor_stored(
    editor_http: httpx.AsyncClient, client: httpx.AsyncClient, app: FastAPI
) -> None:
    form = await publish(editor_http)
    nonce = await fetch_nonce(client, form["publicId"])
    # packs and nutsDetail are required but hidden; their stray values are dropped.
    answers = good_answers(smoker="no", packs=3, allergies=["dust"], nutsDetail="almonds")
    reply = await submit(client, form["publicId"], nonce, answers)
    assert reply.status_code == 201, reply.text
    (row,) = await stored_rows(app, form["id"])
    stored = open_payload(app, row)["answers"]
    assert "packs" not in stored and "nutsDetail" not in stored
    assert stored == good_answers(smoker="no", allergies=["dust"])

    shown = await fetch_nonce(client, form["publicId"])
    answers = good_answers(smoker="yes", packs="2", allergies=["nuts", "dust"], nutsDetail="pecan")
    assert (await submit(client, form["publicId"], shown, answers)).status_code == 201
    rows = {r.nonce_id: r for r in await stored_rows(app, form["id"])}
    stored = open_payload(app, rows[shown.split(".")[0]])["answers"]
    assert stored["packs"] == 2 and stored["nutsDetail"] == "pecan"
    assert stored["allergies"] == ["nuts", "dust"]


async def test_not_equals_condition(
    editor_http: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    fields: list[dict[str, Any]] = [
        {"id": "insured", "type": "radio", "label": "Insured", "options": ["yes", "no"]},
        {
            "id": "insurer",
            "type": "text",
            "label": "Insurer",
            "required": True,
            "showWhen": {"field": "insured", "notEquals": "no"},
        },
    ]
    form = await publish(editor_http, fields)
    pid = form["publicId"]
    assert (
        await submit(client, pid, await fetch_nonce(client, pid), {"insured": "no"})
    ).status_code == 201
    needs = await submit(client, pid, await fetch_nonce(client, pid), {"insured": "yes"})
    assert needs.status_code == 422 and list(needs.json()["fields"]) == ["insurer"]


async def test_responses_keep_the_version_they_answered(
    editor_http: httpx.AsyncClient, client: httpx.AsyncClient, app: FastAPI
) -> None:
    fields = [{"id": "name", "type": "text", "label": "Name v1", "required": True}]
    form = await publish(editor_http, fields)
    pid = form["publicId"]
    assert (
        await submit(client, pid, await fetch_nonce(client, pid), {"name": "A"})
    ).status_code == 201

    edited = [
        {"id": "name", "type": "text", "label": "Name v2", "required": True},
        {"id": "city", "type": "text", "label": "City", "required": True},
    ]
    await editor_http.put(f"/api/forms/{form['id']}", json={"fields": edited})
    # The public link keeps serving version 1 until the next publish.
    public = (await client.get(f"/api/public/forms/{pid}")).json()["form"]
    assert public["version"] == 1
    assert [f["label"] for f in public["fields"]] == ["Name v1"]
    assert (
        await submit(client, pid, await fetch_nonce(client, pid), {"name": "B"})
    ).status_code == 201

    await editor_http.post(f"/api/forms/{form['id']}/publish")
    public = (await client.get(f"/api/public/forms/{pid}")).json()["form"]
    assert public["version"] == 2
    missing_city = await submit(client, pid, await fetch_nonce(client, pid), {"name": "C"})
    assert missing_city.status_code == 422
    done = await submit(client, pid, await fetch_nonce(client, pid), {"name": "C", "city": "X"})
    assert done.status_code == 201
    versions = sorted(r.form_version for r in await stored_rows(app, form["id"]))
    assert versions == [1, 1, 2]
