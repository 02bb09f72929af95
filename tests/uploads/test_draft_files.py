"""A saved draft keeps its files: alive as long as the draft, bound to the page that
resumes it, attached when that page sends (docs/drafts.md, docs/uploads.md); and the
refusals a patient may read from drafts and uploads, in Spanish when asked."""

from __future__ import annotations

from datetime import timedelta

import httpx
from fastapi import FastAPI
from sqlalchemy import update

from healthforms.clock import utcnow
from healthforms.uploads.models import Upload
from healthforms.uploads.service import sweep_expired
from tests.submissions.drafts.helpers import draft_rows, phone, resume_code, resume_link, save
from tests.submissions.helpers import fetch_nonce, publish, stored_rows
from tests.uploads.helpers import UPLOAD_FIELDS, pdf_document, photo_with_gps, upload
from tests.uploads.test_uploads import state_of, upload_rows


def nonce_id(nonce: str) -> str:
    return nonce.split(".", 1)[0]


async def test_a_drafts_photo_lives_with_it_moves_to_the_resumed_page_and_is_attached(
    editor_http: httpx.AsyncClient, app: FastAPI
) -> None:
    form = await publish(editor_http, UPLOAD_FIELDS)
    public_id = form["publicId"]
    async with phone(app, "198.51.100.31") as first:
        first_nonce = await fetch_nonce(first, public_id)
        sent = await upload(first, public_id, first_nonce, "card", photo_with_gps())
        assert sent.status_code == 201, sent.text
        photo_id = sent.json()["id"]
        (pending,) = await upload_rows(app, form["id"])
        page_expiry = pending.expires_at
        saved = await save(first, public_id, {"name": "Ada", "card": [photo_id]}, nonce=first_nonce)
        assert saved.status_code == 201, saved.text
        token = saved.json()["draft"]["token"]
    (draft,) = await draft_rows(state_of(app).db, form["id"])
    (kept,) = await upload_rows(app, form["id"])
    # Saved with the draft: it lives as long as the draft, far beyond the page.
    assert kept.expires_at == draft.expires_at
    assert page_expiry is not None and kept.expires_at is not None
    assert kept.expires_at > page_expiry + timedelta(hours=1)

    async with phone(app, "198.51.100.32") as second:
        second_nonce = await fetch_nonce(second, public_id)
        resumed = await second.get(f"/api/public/drafts/{token}", params={"nonce": second_nonce})
        assert resumed.status_code == 200, resumed.text
        body = resumed.json()
        assert body["answers"] == {"name": "Ada", "card": [photo_id]}
        assert body["dropped"] == []
        (listed,) = body["files"]["card"]
        assert listed["id"] == photo_id and listed["mediaType"] == "image/jpeg"
        assert "name" not in listed  # a file's name is never stored
        (moved,) = await upload_rows(app, form["id"])
        assert moved.nonce_id == nonce_id(second_nonce)
        assert moved.expires_at is not None and moved.expires_at >= draft.expires_at

        stored = await second.post(
            f"/api/public/forms/{public_id}/responses",
            json={"nonce": second_nonce, "answers": body["answers"], "draft": token},
        )
        assert stored.status_code == 201, stored.text
    (response,) = await stored_rows(app, form["id"])
    (attached,) = await upload_rows(app, form["id"])
    assert attached.response_id == response.id and attached.expires_at is None
    assert await draft_rows(state_of(app).db, form["id"]) == []


async def test_a_code_resume_binds_the_files_and_drops_those_no_longer_kept(
    editor_http: httpx.AsyncClient, app: FastAPI
) -> None:
    form = await publish(editor_http, UPLOAD_FIELDS)
    public_id = form["publicId"]
    async with phone(app, "198.51.100.33") as first:
        nonce = await fetch_nonce(first, public_id)
        photo = (await upload(first, public_id, nonce, "card", photo_with_gps())).json()["id"]
        papers = [
            (
                await upload(
                    first, public_id, nonce, "papers", pdf_document(), "a.pdf", "application/pdf"
                )
            ).json()["id"]
            for _ in range(2)
        ]
        answers = {"name": "Ada", "card": [photo], "papers": papers}
        saved = await save(first, public_id, answers, nonce=nonce)
        assert saved.status_code == 201, saved.text
        code = saved.json()["draft"]["code"]
    # One of the papers is past its time (swept or not, it is no longer the draft's).
    async with state_of(app).db.sessions() as session, session.begin():
        await session.execute(
            update(Upload)
            .where(Upload.id == papers[0])
            .values(expires_at=utcnow() - timedelta(minutes=1))
        )
    async with phone(app, "198.51.100.34") as second:
        second_nonce = await fetch_nonce(second, public_id)
        resumed = await second.post(
            f"/api/public/forms/{public_id}/drafts/resume",
            json={"code": code, "nonce": second_nonce},
        )
        assert resumed.status_code == 200, resumed.text
        body = resumed.json()
        assert body["answers"]["papers"] == [papers[1]]
        assert body["dropped"] == ["papers"]
        assert [f["id"] for f in body["files"]["papers"]] == [papers[1]]
        rows = {row.id: row for row in await upload_rows(app, form["id"])}
        assert rows[photo].nonce_id == nonce_id(second_nonce)
        assert rows[papers[1]].nonce_id == nonce_id(second_nonce)
        assert rows[papers[0]].nonce_id == nonce_id(nonce)  # not brought back
        stored = await second.post(
            f"/api/public/forms/{public_id}/responses",
            json={"nonce": second_nonce, "answers": body["answers"]},
        )
        assert stored.status_code == 201, stored.text
    (response,) = await stored_rows(app, form["id"])
    rows = {row.id: row for row in await upload_rows(app, form["id"])}
    assert rows[photo].response_id == response.id
    assert rows[papers[1]].response_id == response.id
    assert rows[papers[0]].response_id is None


async def test_a_draft_cannot_keep_another_forms_upload_alive(
    editor_http: httpx.AsyncClient, app: FastAPI
) -> None:
    mine = await publish(editor_http, UPLOAD_FIELDS, title="Mine")
    theirs = await publish(editor_http, UPLOAD_FIELDS, title="Theirs")
    async with phone(app, "198.51.100.35") as http:
        their_nonce = await fetch_nonce(http, theirs["publicId"])
        sent = await upload(http, theirs["publicId"], their_nonce, "card", photo_with_gps())
        their_photo = sent.json()["id"]
        (before,) = await upload_rows(app, theirs["id"])
        nonce = await fetch_nonce(http, mine["publicId"])
        saved = await save(http, mine["publicId"], {"card": [their_photo]}, nonce=nonce)
        assert saved.status_code == 201, saved.text
        token = saved.json()["draft"]["token"]
        (after,) = await upload_rows(app, theirs["id"])
        assert after.expires_at == before.expires_at
        resumed = await resume_link(http, token)
        assert resumed.status_code == 200
        assert resumed.json()["files"] == {} and "card" not in resumed.json()["answers"]


async def test_draft_and_upload_refusals_speak_spanish_when_asked(
    editor_http: httpx.AsyncClient, app: FastAPI
) -> None:
    form = await publish(editor_http, UPLOAD_FIELDS)
    public_id = form["publicId"]
    spanish = {"Accept-Language": "es-MX,es;q=0.9"}
    async with phone(app, "198.51.100.36") as http:
        nonce = await fetch_nonce(http, public_id)
        refused = await http.post(
            f"/api/public/forms/{public_id}/files",
            data={"nonce": nonce, "field": "card"},
            files={"file": ("card.jpg", pdf_document(), "image/jpeg")},
            headers=spanish,
        )
        assert refused.status_code == 422
        assert refused.json() == {
            "error": "Algunos campos no son válidos.",
            "code": "validation_error",
            "fields": {"card": "debe ser una foto (JPEG, PNG o WebP)"},
        }
        english = await upload(http, public_id, nonce, "card", pdf_document())
        assert english.json()["fields"] == {"card": "must be a photo (JPEG, PNG or WebP)"}

        saved = await http.post(
            f"/api/public/forms/{public_id}/drafts",
            json={"nonce": nonce, "answers": {"name": 7, "ghost": "x"}},
            headers=spanish,
        )
        assert saved.status_code == 422
        assert saved.json()["fields"] == {"name": "debe ser texto", "ghost": "campo desconocido"}

        missing = await http.get("/api/public/drafts/" + "A" * 43, headers=spanish)
        assert missing.status_code == 404
        assert missing.json() == {
            "error": "No se encontró ningún formulario guardado para este enlace. "
            "Es posible que ya se haya enviado.",
            "code": "draft_not_found",
        }
        wrong = await http.post(
            f"/api/public/forms/{public_id}/drafts/resume",
            json={"code": "0000000000"},
            headers=spanish,
        )
        assert wrong.status_code == 404
        assert wrong.json()["error"].startswith("Ningún formulario guardado coincide")
        assert (
            (await resume_code(http, public_id, "0000000000"))
            .json()["error"]
            .startswith("No saved form matches this code")
        )


async def test_a_deleted_draft_leaves_its_files_to_expire(
    editor_http: httpx.AsyncClient, app: FastAPI
) -> None:
    form = await publish(editor_http, UPLOAD_FIELDS)
    public_id = form["publicId"]
    async with phone(app, "198.51.100.37") as http:
        nonce = await fetch_nonce(http, public_id)
        photo = (await upload(http, public_id, nonce, "card", photo_with_gps())).json()["id"]
        saved = await save(http, public_id, {"card": [photo]}, nonce=nonce)
        token = saved.json()["draft"]["token"]
        assert (await http.delete(f"/api/public/drafts/{token}")).status_code == 204
    (row,) = await upload_rows(app, form["id"])
    assert row.response_id is None and row.expires_at is not None
    # Past the draft's time it is swept like any pending upload.
    async with state_of(app).db.sessions() as session:
        # Other tests' pending uploads may be swept too: this form's is checked below.
        assert await sweep_expired(session, row.expires_at + timedelta(seconds=1)) >= 1
    assert await upload_rows(app, form["id"]) == []
