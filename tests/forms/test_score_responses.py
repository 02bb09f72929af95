"""A PHQ-9 made from the gallery, answered by a patient and read by staff: the score is
calculated by the server, sealed, and shown on the response, the list, the exports and
the PDF; the patient sees it only when the form says so."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import re
from typing import Any
from urllib.parse import urlencode

import httpx
from fastapi import FastAPI
from pypdf import PdfReader
from sqlalchemy import select

from healthforms.audit.models import AuditEventRow
from healthforms.crypto.keys import KeyRing, generate_key
from healthforms.responses.key_rotation import rotate_keys
from healthforms.responses.models import ResponseScores
from healthforms.responses.scores import read_scores
from healthforms.security.principal import Role
from healthforms.state import AppState
from tests.exports.helpers import read_xlsx
from tests.forms.helpers import StaffDirectory, signed_in
from tests.support.apps import asgi_client
from tests.support.plaintext import tables_holding

FREQUENCY = ["Not at all", "Several days", "More than half the days", "Nearly every day"]
# A label no other test writes: found in no table in plaintext.
BAND = "Zorblax moderate"


def phq9_answers(items: list[int]) -> dict[str, Any]:
    answers: dict[str, Any] = {f"q{n}": FREQUENCY[v] for n, v in enumerate(items, start=1)}
    answers["difficulty"] = "Somewhat difficult"
    return answers


async def published_phq9(http: httpx.AsyncClient, **score: Any) -> dict[str, Any]:
    created = (await http.post("/api/forms", json={"template": "phq9"})).json()
    fields = created["fields"]
    total = fields[-1]
    total["score"]["bands"][2]["label"] = BAND  # 10-14
    total["score"].update(score)
    saved = await http.put(f"/api/forms/{created['id']}", json={"fields": fields})
    assert saved.status_code == 200, saved.text
    published = await http.post(f"/api/forms/{created['id']}/publish")
    assert published.status_code == 200
    form: dict[str, Any] = published.json()
    return form


async def submit(app: FastAPI, public_id: str, answers: dict[str, Any]) -> httpx.Response:
    async with asgi_client(app) as patient:
        page = await patient.get(f"/api/public/forms/{public_id}")
        assert page.status_code == 200, page.text
        return await patient.post(
            f"/api/public/forms/{public_id}/responses",
            json={"nonce": page.json()["nonce"], "answers": answers},
        )


async def test_staff_see_the_score_everywhere_and_the_patient_does_not(
    app: FastAPI, editor_http: httpx.AsyncClient
) -> None:
    form = await published_phq9(editor_http)
    public = await editor_http.get(f"/api/public/forms/{form['publicId']}")
    # The patient's definition carries no score field and no option scores.
    patient_fields = public.json()["form"]["fields"]
    assert "phq9_total" not in [f["id"] for f in patient_fields]
    assert "optionScores" not in public.text and BAND not in public.text

    sent = await submit(app, form["publicId"], phq9_answers([3, 3, 2, 2, 1, 1, 1, 1, 0]))
    assert sent.status_code == 201, sent.text
    assert sent.json() == {"confirmation": sent.json()["confirmation"]}  # no score

    listed = await editor_http.get(f"/api/forms/{form['id']}/responses")
    (row,) = listed.json()["responses"]
    expected = {"label": "PHQ-9 total", "value": 14, "band": BAND, "answered": 9, "items": 9}
    assert row["scores"] == {"phq9_total": expected}
    read = (await editor_http.get(f"/api/responses/{row['id']}")).json()
    assert read["scores"] == {"phq9_total": expected}
    assert "phq9_total" not in read["answers"]

    # The list view that showed it is audited, naming the response, never the score.
    state: AppState = app.state.hf
    async with state.db.sessions() as session:
        (event,) = (
            await session.execute(
                select(AuditEventRow).where(
                    AuditEventRow.action == "responses.listed",
                    AuditEventRow.resource_id == form["id"],
                )
            )
        ).scalars()
        sealed = await session.get(ResponseScores, row["id"])
    assert json.loads(event.detail or "{}")["scoredIds"] == [row["id"]]
    assert BAND not in str(vars(event))
    assert sealed is not None and BAND.encode() not in sealed.ciphertext
    # The band's label is in the form's definition only: the response's is sealed.
    assert await tables_holding(state.db, BAND) == ["form_versions.fields", "forms.fields"]

    exported = await editor_http.get(
        f"/api/forms/{form['id']}/responses/export", params={"format": "csv"}
    )
    assert exported.status_code == 200, exported.text
    table = list(csv.reader(io.StringIO(exported.text.lstrip("\ufeff"))))
    header, values = table[0], table[1]
    value_at = header.index("PHQ-9 total (phq9_total)")
    assert header[value_at + 1] == "PHQ-9 total band (phq9_total)"
    assert values[value_at : value_at + 2] == ["14", BAND]
    workbook = await editor_http.get(
        f"/api/forms/{form['id']}/responses/export", params={"format": "xlsx"}
    )
    assert workbook.status_code == 200
    sheet = read_xlsx(workbook.content)
    assert sheet[0][value_at : value_at + 2] == header[value_at : value_at + 2]
    assert sheet[1][value_at : value_at + 2] == ["14", BAND]

    pdf = await editor_http.post(f"/api/responses/{row['id']}/generate-pdf")
    assert pdf.status_code == 200, pdf.text
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
    assert "PHQ-9 total" in text and "14 — " in text and BAND in text


async def test_a_client_sent_score_is_refused_and_the_nonce_stays_usable(
    app: FastAPI, editor_http: httpx.AsyncClient
) -> None:
    form = await published_phq9(editor_http)
    async with asgi_client(app) as patient:
        page = await patient.get(f"/api/public/forms/{form['publicId']}")
        nonce = page.json()["nonce"]
        url = f"/api/public/forms/{form['publicId']}/responses"
        forged = {**phq9_answers([0] * 9), "phq9_total": 27}
        refused = await patient.post(url, json={"nonce": nonce, "answers": forged})
        assert refused.status_code == 422
        assert refused.json()["fields"] == {
            "phq9_total": "is calculated by the clinic, not answered"
        }
        sent = await patient.post(url, json={"nonce": nonce, "answers": phq9_answers([0] * 9)})
        assert sent.status_code == 201
    (row,) = (await editor_http.get(f"/api/forms/{form['id']}/responses")).json()["responses"]
    assert row["scores"]["phq9_total"]["value"] == 0
    assert row["scores"]["phq9_total"]["band"] == "Minimal"


async def test_an_optional_item_left_blank_stores_an_incomplete_score(
    app: FastAPI, editor_http: httpx.AsyncClient
) -> None:
    created = (await editor_http.post("/api/forms", json={"template": "gad7"})).json()
    fields = created["fields"]
    next(f for f in fields if f["id"] == "q7")["required"] = False  # a clinic's choice
    await editor_http.put(f"/api/forms/{created['id']}", json={"fields": fields})
    form = (await editor_http.post(f"/api/forms/{created['id']}/publish")).json()
    answers = {f"q{n}": FREQUENCY[3] for n in range(1, 7)}
    assert (await submit(app, form["publicId"], answers)).status_code == 201
    (row,) = (await editor_http.get(f"/api/forms/{form['id']}/responses")).json()["responses"]
    assert row["scores"]["gad7_total"] == {
        "label": "GAD-7 total", "value": None, "band": None, "answered": 6, "items": 7,
    }  # fmt: skip
    pdf = await editor_http.post(f"/api/responses/{row['id']}/generate-pdf")
    text = PdfReader(io.BytesIO(pdf.content)).pages[0].extract_text()
    assert "Incomplete (6 of 7 answered)" in text
    exported = await editor_http.get(
        f"/api/forms/{form['id']}/responses/export", params={"format": "csv"}
    )
    header, values = list(csv.reader(io.StringIO(exported.text.lstrip("\ufeff"))))[:2]
    assert values[header.index("GAD-7 total (gad7_total)")] == "incomplete"


async def test_show_patient_returns_the_score_with_the_confirmation_even_on_a_resend(
    app: FastAPI, editor_http: httpx.AsyncClient
) -> None:
    form = await published_phq9(editor_http, showPatient=True)
    answers = phq9_answers([3] * 9)
    async with asgi_client(app) as patient:
        page = await patient.get(f"/api/public/forms/{form['publicId']}")
        body = {"nonce": page.json()["nonce"], "answers": answers}
        url = f"/api/public/forms/{form['publicId']}/responses"
        first = await patient.post(url, json=body)
        again = await patient.post(url, json=body)
    assert (first.status_code, again.status_code) == (201, 200)
    shown = [
        {"id": "phq9_total", "label": "PHQ-9 total", "value": 27, "band": "Severe",
         "answered": 9},
    ]  # fmt: skip
    assert first.json()["scores"] == shown and again.json()["scores"] == shown
    assert first.json()["confirmation"] == again.json()["confirmation"]


async def test_deleting_a_response_deletes_its_sealed_scores(
    app: FastAPI, staff_directory: StaffDirectory, editor_http: httpx.AsyncClient
) -> None:
    form = await published_phq9(editor_http)
    assert (await submit(app, form["publicId"], phq9_answers([1] * 9))).status_code == 201
    (row,) = (await editor_http.get(f"/api/forms/{form['id']}/responses")).json()["responses"]
    state: AppState = app.state.hf
    async with state.db.sessions() as session:
        assert await session.get(ResponseScores, row["id"]) is not None
    admin = await staff_directory.user(Role.ADMIN)
    async with signed_in(app, staff_directory, admin) as http:
        assert (await http.delete(f"/api/responses/{row['id']}")).status_code == 204
    async with state.db.sessions() as session:
        assert await session.get(ResponseScores, row["id"]) is None


async def test_key_rotation_rewraps_the_sealed_scores_and_they_still_open(
    app: FastAPI, editor_http: httpx.AsyncClient
) -> None:
    form = await published_phq9(editor_http)
    assert (await submit(app, form["publicId"], phq9_answers([2] * 9))).status_code == 201
    (row,) = (await editor_http.get(f"/api/forms/{form['id']}/responses")).json()["responses"]
    state: AppState = app.state.hf
    rotated = KeyRing(current=base64.b64decode(generate_key()), previous=(state.keys.current,))
    counts = {c.name: c for c in await rotate_keys(state.db, rotated)}
    assert counts["response_scores"].rewrapped >= 1
    alone = KeyRing(current=rotated.current)  # the old key retired
    async with state.db.sessions() as session:
        sealed = await session.get(ResponseScores, row["id"])
        assert sealed is not None and sealed.key_id == alone.current_id
        opened = await read_scores(session, alone, [row["id"]])
    assert opened[row["id"]]["phq9_total"]["value"] == 18
    assert opened[row["id"]]["phq9_total"]["band"] == "Moderately severe"


async def test_without_javascript_the_confirmation_shows_only_what_show_patient_allows(
    app: FastAPI, editor_http: httpx.AsyncClient
) -> None:
    for show in (False, True):
        form = await published_phq9(editor_http, showPatient=show)
        async with asgi_client(app) as patient:
            page = await patient.get(f"/f/{form['publicId']}", headers={"accept": "text/html"})
            assert page.status_code == 200
            assert "PHQ-9 total" not in page.text and "optionScores" not in page.text
            found = re.search(r'name="_nonce" id="form-nonce" value="([^"]+)"', page.text)
            assert found is not None
            pairs = [("_nonce", html.unescape(found.group(1)))]
            pairs += [(f"q{n}", FREQUENCY[3]) for n in range(1, 10)]
            sent = await patient.post(
                f"/f/{form['publicId']}",
                content=urlencode(pairs).encode(),
                headers={
                    "content-type": "application/x-www-form-urlencoded",
                    "accept": "text/html",
                },
            )
        assert sent.status_code == 200, sent.text
        assert 'id="confirmation-code"' in sent.text
        assert ("Your results" in sent.text) is show
        assert ("27 (Severe)" in sent.text) is show
