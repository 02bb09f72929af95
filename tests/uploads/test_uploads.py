"""Patients' files: typed by content, cleaned, sealed, attached once, swept, served to
staff, deleted with their response (docs/uploads.md)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import cast

import httpx
from fastapi import FastAPI
from PIL import Image
from pypdf import PageObject, PdfReader
from pypdf.generic import DictionaryObject
from sqlalchemy import func, select, update

from healthforms.audit.models import AuditEventRow
from healthforms.clock import utcnow
from healthforms.crypto.keys import KeyRing, generate_key
from healthforms.db.base import Base
from healthforms.metrics import Metrics
from healthforms.responses.key_rotation import rotate_keys
from healthforms.responses.models import ResponseRow
from healthforms.retention.job import PurgeJob, RoundOutcome
from healthforms.state import AppState
from healthforms.uploads.models import Upload, UploadBlob
from healthforms.uploads.service import (
    STALE_UPLOAD,
    extend_pending,
    open_file,
    sweep_expired,
)
from tests.patient_requests.helpers import create_request, token_of
from tests.submissions.helpers import fetch_nonce, publish, submit
from tests.support.plaintext import sqlite_files_holding, tables_holding
from tests.uploads.helpers import (
    PDF_MARKER,
    UPLOAD_FIELDS,
    pdf_document,
    photo_with_gps,
    upload,
)


def state_of(app: FastAPI) -> AppState:
    state: AppState = app.state.hf
    return state


async def upload_rows(app: FastAPI, form_id: str) -> list[Upload]:
    async with state_of(app).db.sessions() as session:
        query = select(Upload).where(Upload.form_id == form_id).order_by(Upload.created_at)
        return list((await session.execute(query)).scalars())


async def blob_count(app: FastAPI, upload_ids: list[str]) -> int:
    async with state_of(app).db.sessions() as session:
        query = select(func.count()).select_from(UploadBlob)
        query = query.where(UploadBlob.upload_id.in_(upload_ids))
        return int((await session.execute(query)).scalar_one())


async def response_count(app: FastAPI, form_id: str) -> int:
    async with state_of(app).db.sessions() as session:
        query = select(func.count()).select_from(ResponseRow)
        query = query.where(ResponseRow.form_id == form_id)
        return int((await session.execute(query)).scalar_one())


async def bytes_columns_holding(app: FastAPI, needle: bytes) -> list[str]:
    """`table.column` of every binary value containing `needle` (raw bytes)."""
    found = []
    async with state_of(app).db.sessions() as session:
        for table in Base.metadata.sorted_tables:
            for row in await session.execute(select(*table.columns)):
                for column, value in zip(table.columns, row, strict=True):
                    if isinstance(value, bytes | bytearray | memoryview) and needle in bytes(value):
                        found.append(f"{table.name}.{column.name}")
    return found


def image_xobjects(page: PageObject) -> list[str]:
    """Names of the image XObjects a page draws."""
    resources = cast(DictionaryObject, page["/Resources"].get_object())
    if "/XObject" not in resources:
        return []
    xobjects = cast(DictionaryObject, resources["/XObject"].get_object())
    return [
        str(name)
        for name, obj in xobjects.items()
        if str(cast(DictionaryObject, obj.get_object())["/Subtype"]) == "/Image"
    ]


def sqlite_file_holds(url: str, needle: bytes) -> bool:
    if not url.startswith("sqlite"):
        return False
    path = Path(url.split("///", 1)[1].split("?", 1)[0])
    return any(
        candidate.exists() and needle in candidate.read_bytes()
        for candidate in (path, Path(f"{path}-wal"), Path(f"{path}-journal"))
    )


async def test_a_photo_loses_its_gps_is_attached_and_served_to_staff_audited(
    editor_http: httpx.AsyncClient, client: httpx.AsyncClient, app: FastAPI
) -> None:
    form = await publish(editor_http, UPLOAD_FIELDS)
    public_id = form["publicId"]
    nonce = await fetch_nonce(client, public_id)
    source = photo_with_gps()
    assert b"PhoneMaker" in source
    sent = await upload(client, public_id, nonce, "card", source, filename="jane-doe-card.jpg")
    assert sent.status_code == 201, sent.text
    assert sent.headers["cache-control"] == "no-store"
    body = sent.json()
    assert body["fieldId"] == "card" and body["mediaType"] == "image/jpeg"
    assert (body["width"], body["height"]) == (64, 40)
    # The upload did not use the nonce: the page's submission still goes through.
    stored = await submit(client, public_id, nonce, {"name": "Ada", "card": [body["id"]]})
    assert stored.status_code == 201, stored.text

    (row,) = await upload_rows(app, form["id"])
    assert row.response_id is not None and row.expires_at is None
    listed = await editor_http.get(f"/api/responses/{row.response_id}/files")
    assert listed.status_code == 200
    assert listed.json() == {
        "files": [
            {
                "id": body["id"],
                "fieldId": "card",
                "mediaType": "image/jpeg",
                "sizeBytes": row.size_bytes,
                "width": 64,
                "height": 40,
            }
        ]
    }
    served = await editor_http.get(f"/api/responses/{row.response_id}/files/{body['id']}")
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/jpeg"
    assert served.headers["cache-control"].startswith("no-store")
    assert served.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in served.headers["content-security-policy"]
    assert served.headers["content-disposition"].startswith("inline")
    assert "jane" not in served.headers["content-disposition"]
    assert b"PhoneMaker" not in served.content
    with Image.open(io.BytesIO(served.content)) as image:
        assert dict(image.getexif()) == {} and "exif" not in image.info
        assert image.size == (64, 40)
    async with state_of(app).db.sessions() as session:
        events = list(
            (
                await session.execute(
                    select(AuditEventRow).where(AuditEventRow.action == "response.file_viewed")
                )
            ).scalars()
        )
    assert [e.resource_id for e in events] == [row.response_id]
    assert json.loads(events[0].detail or "{}") == {"fileId": body["id"]}
    # The file's name is nowhere.
    assert await tables_holding(state_of(app).db, "jane-doe") == []

    # Another clinic's staff, or a wrong id, get 404.
    missing = await editor_http.get(f"/api/responses/{row.response_id}/files/upl_nothere1234")
    assert missing.status_code == 404


async def test_a_pdf_is_kept_as_sent_served_as_an_attachment_and_sealed_at_rest(
    editor_http: httpx.AsyncClient, client: httpx.AsyncClient, app: FastAPI, database_url: str
) -> None:
    form = await publish(editor_http, UPLOAD_FIELDS)
    public_id = form["publicId"]
    nonce = await fetch_nonce(client, public_id)
    document = pdf_document(pages=2)
    sent = await upload(
        client, public_id, nonce, "papers", document, "referral.pdf", "application/pdf"
    )
    assert sent.status_code == 201, sent.text
    assert sent.json()["pages"] == 2
    photo = await upload(client, public_id, nonce, "card", photo_with_gps())
    ids = {"papers": [sent.json()["id"]], "card": [photo.json()["id"]]}
    stored = await submit(client, public_id, nonce, {**ids, "name": "Ada"})
    assert stored.status_code == 201, stored.text
    rows = await upload_rows(app, form["id"])
    response_id = rows[0].response_id
    served = await editor_http.get(f"/api/responses/{response_id}/files/{ids['papers'][0]}")
    assert served.status_code == 200
    assert served.content == document
    assert served.headers["content-type"] == "application/pdf"
    assert served.headers["content-disposition"].startswith("attachment")
    clean_photo = (
        await editor_http.get(f"/api/responses/{response_id}/files/{ids['card'][0]}")
    ).content

    # Ciphertext only: neither the PDF's text nor any run of the stored photo's bytes
    # is in any table or in the SQLite file.
    assert await tables_holding(state_of(app).db, PDF_MARKER) == []
    assert sqlite_files_holding(database_url, PDF_MARKER) == []
    middle = clean_photo[len(clean_photo) // 2 : len(clean_photo) // 2 + 48]
    assert len(middle) == 48
    assert await bytes_columns_holding(app, middle) == []
    assert not sqlite_file_holds(database_url, middle)


async def test_the_content_decides_the_type_never_the_name(
    editor_http: httpx.AsyncClient, client: httpx.AsyncClient, app: FastAPI
) -> None:
    form = await publish(editor_http, UPLOAD_FIELDS)
    public_id = form["publicId"]
    nonce = await fetch_nonce(client, public_id)
    # A PDF named and declared as a photo, for a photos-only field.
    refused = await upload(client, public_id, nonce, "card", pdf_document(), "card.jpg")
    assert refused.status_code == 422
    assert refused.json()["fields"] == {"card": "must be a photo (JPEG, PNG or WebP)"}
    # Script dressed as a photo, for a field that takes photos and PDFs.
    html = b"<html><script>alert(1)</script></html>"
    refused = await upload(client, public_id, nonce, "papers", html, "x.jpg")
    assert refused.json()["fields"] == {
        "papers": "must be a photo (JPEG, PNG or WebP) or a PDF document"
    }
    # A damaged JPEG: the right magic, no picture.
    refused = await upload(client, public_id, nonce, "card", b"\xff\xd8\xff\xe0" + b"0" * 200)
    assert refused.json()["fields"] == {"card": "is damaged or not an image"}
    # Not a file question; an unknown one.
    for field in ("name", "nope"):
        refused = await upload(client, public_id, nonce, field, photo_with_gps())
        assert refused.status_code == 422
        assert refused.json()["fields"] == {"field": "is not a file question of this form"}
    # A forged nonce, and no multipart at all.
    forged = await upload(client, public_id, nonce[:-2] + "xx", "card", photo_with_gps())
    assert forged.status_code == 400 and forged.json()["code"] == "nonce_invalid"
    raw = await client.post(f"/api/public/forms/{public_id}/files", content=photo_with_gps())
    assert raw.status_code == 400 and raw.json()["code"] == "upload_unreadable"
    assert await upload_rows(app, form["id"]) == []


async def test_size_count_and_bombs_are_refused_with_the_patients_words(
    editor_http: httpx.AsyncClient, client: httpx.AsyncClient, app: FastAPI
) -> None:
    form = await publish(editor_http, UPLOAD_FIELDS)
    public_id = form["publicId"]
    nonce = await fetch_nonce(client, public_id)
    # maxSizeMb 1: a 1.2 MB file.
    big = pdf_document() + os.urandom(1_200_000)
    refused = await upload(client, public_id, nonce, "papers", big, "big.pdf", "application/pdf")
    assert refused.status_code == 422
    assert refused.json()["fields"] == {"papers": "is too large (at most 1 MB per file)"}
    # Past the largest field's limit, the body is refused before it is read: 413.
    huge = await upload(client, public_id, nonce, "papers", b"\0" * (21 * 1024 * 1024))
    assert huge.status_code == 413
    assert huge.json()["code"] == "payload_too_large" and "error" in huge.json()
    # A decompression bomb: a few KiB of PNG declaring 400 megapixels.
    out = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(out, format="PNG")
    bomb = await upload(client, public_id, nonce, "card", out.getvalue(), "b.png", "image/png")
    assert bomb.status_code == 422
    assert bomb.json()["fields"] == {"card": "is too large an image to open safely"}
    # maxFiles 2: three files in one answer are refused, nothing stored.
    ids = []
    for _ in range(3):
        sent = await upload(client, public_id, nonce, "papers", photo_with_gps())
        assert sent.status_code == 201, sent.text
        ids.append(sent.json()["id"])
    refused = await submit(client, public_id, nonce, {"papers": ids})
    assert refused.status_code == 422
    assert refused.json()["fields"] == {"papers": "takes at most 2 files"}
    assert await response_count(app, form["id"]) == 0
    # One page keeps at most 3 x maxFiles pending files per field.
    for _ in range(3):
        assert (
            await upload(client, public_id, nonce, "papers", photo_with_gps())
        ).status_code == 201
    over = await upload(client, public_id, nonce, "papers", photo_with_gps())
    assert over.status_code == 422
    assert "too many files" in over.json()["fields"]["papers"]
    # The nonce is still good: the page sends two of its files.
    stored = await submit(client, public_id, nonce, {"papers": ids[:2]})
    assert stored.status_code == 201, stored.text


async def test_another_pages_or_an_attached_upload_is_refused_and_nothing_is_stored(
    editor_http: httpx.AsyncClient, client: httpx.AsyncClient, app: FastAPI
) -> None:
    form = await publish(editor_http, UPLOAD_FIELDS)
    public_id = form["publicId"]
    first, second = await fetch_nonce(client, public_id), await fetch_nonce(client, public_id)
    mine = (await upload(client, public_id, first, "card", photo_with_gps())).json()["id"]
    # Another page (nonce) names it: 422, nothing stored, the nonce is not used up.
    foreign = await submit(client, public_id, second, {"card": [mine]})
    assert foreign.status_code == 422
    assert foreign.json()["fields"] == {"card": STALE_UPLOAD}
    assert await response_count(app, form["id"]) == 0
    # The same page, but under another field.
    wrong_field = await submit(client, public_id, first, {"papers": [mine]})
    assert wrong_field.json()["fields"] == {"papers": STALE_UPLOAD}
    assert (await submit(client, public_id, second, {"name": "Bo"})).status_code == 201
    assert (await submit(client, public_id, first, {"card": [mine]})).status_code == 201
    # Attached now: a third page cannot take it over.
    third = await fetch_nonce(client, public_id)
    taken = await submit(client, public_id, third, {"card": [mine]})
    assert taken.json()["fields"] == {"card": STALE_UPLOAD}
    assert await response_count(app, form["id"]) == 2
    # An id of the wrong shape is refused by validation.
    bad = await submit(client, public_id, third, {"card": ["../../etc/passwd"]})
    assert bad.json()["fields"] == {"card": "must be a list of uploaded files"}


async def test_unattached_uploads_expire_unless_kept_and_are_swept(
    editor_http: httpx.AsyncClient, client: httpx.AsyncClient, app: FastAPI
) -> None:
    form = await publish(editor_http, UPLOAD_FIELDS)
    public_id = form["publicId"]
    nonce = await fetch_nonce(client, public_id)
    kept, dropped = [
        (await upload(client, public_id, nonce, "papers", photo_with_gps())).json()["id"]
        for _ in range(2)
    ]
    rows = await upload_rows(app, form["id"])
    expires = rows[0].expires_at
    assert expires is not None
    # Pending until the page's nonce expires (30 min) and a grace after it.
    assert timedelta(minutes=35) <= expires - utcnow() <= timedelta(minutes=41)
    later = utcnow() + timedelta(hours=2)
    async with state_of(app).db.sessions() as session:
        assert await extend_pending(session, [kept], later + timedelta(days=1)) == 1
        await session.commit()
    async with state_of(app).db.sessions() as session:
        # Other tests' pending uploads may be swept too: this form's are checked below.
        assert await sweep_expired(session, later) >= 1
    remaining = await upload_rows(app, form["id"])
    assert [r.id for r in remaining] == [kept]
    assert await blob_count(app, [kept, dropped]) == 1
    # A swept upload can no longer be attached.
    refused = await submit(client, public_id, nonce, {"papers": [dropped]})
    assert refused.json()["fields"] == {"papers": STALE_UPLOAD}
    # A kept upload moves to a new page's nonce (a resumed draft).
    fresh = await fetch_nonce(client, public_id)
    async with state_of(app).db.sessions() as session:
        moved = await extend_pending(
            session, [kept], later + timedelta(days=1), nonce_id=fresh.split(".")[0]
        )
        assert moved == 1
        await session.commit()
    stored = await submit(client, public_id, fresh, {"papers": [kept]})
    assert stored.status_code == 201, stored.text
    # Attached uploads are neither extended nor swept.
    async with state_of(app).db.sessions() as session:
        assert await extend_pending(session, [kept], later) == 0
        await sweep_expired(session, utcnow() + timedelta(days=400), limit=10_000)
    (attached,) = await upload_rows(app, form["id"])
    assert attached.id == kept and attached.response_id is not None


async def test_deleting_a_response_deletes_its_files(
    editor_http: httpx.AsyncClient,
    admin_http: httpx.AsyncClient,
    client: httpx.AsyncClient,
    app: FastAPI,
) -> None:
    form = await publish(editor_http, UPLOAD_FIELDS)
    public_id = form["publicId"]
    nonce = await fetch_nonce(client, public_id)
    ids = [
        (await upload(client, public_id, nonce, "papers", photo_with_gps())).json()["id"]
        for _ in range(2)
    ]
    assert (await submit(client, public_id, nonce, {"papers": ids})).status_code == 201
    (row, _) = await upload_rows(app, form["id"])
    deleted = await admin_http.delete(f"/api/responses/{row.response_id}")
    assert deleted.status_code == 204, deleted.text
    assert await upload_rows(app, form["id"]) == []
    assert await blob_count(app, ids) == 0


async def test_a_request_link_takes_files_bound_to_its_own_nonces(
    editor_http: httpx.AsyncClient, client: httpx.AsyncClient, app: FastAPI
) -> None:
    form = await publish(editor_http, UPLOAD_FIELDS)
    created = await create_request(editor_http, form["id"])
    token = token_of(created["link"])
    base = "/api/public/requests"
    nonce = (await client.get(f"{base}/{token}")).json()["nonce"]
    # The form's public nonce does not work on the request link, nor the other way.
    public_nonce = await fetch_nonce(client, form["publicId"])
    wrong = await upload(client, token, public_nonce, "card", photo_with_gps(), base=base)
    assert wrong.status_code == 400
    sent = await upload(client, token, nonce, "card", photo_with_gps(), base=base)
    assert sent.status_code == 201, sent.text
    elsewhere = await submit(client, form["publicId"], public_nonce, {"card": [sent.json()["id"]]})
    assert elsewhere.json()["fields"] == {"card": STALE_UPLOAD}
    stored = await client.post(
        f"{base}/{token}/responses", json={"nonce": nonce, "answers": {"card": [sent.json()["id"]]}}
    )
    assert stored.status_code == 201, stored.text
    (row,) = await upload_rows(app, form["id"])
    assert row.response_id is not None


async def test_the_response_pdf_embeds_photos_and_appends_documents(
    editor_http: httpx.AsyncClient, client: httpx.AsyncClient, app: FastAPI
) -> None:
    form = await publish(editor_http, UPLOAD_FIELDS)
    public_id = form["publicId"]
    nonce = await fetch_nonce(client, public_id)
    photo = (await upload(client, public_id, nonce, "card", photo_with_gps())).json()["id"]
    document = await upload(
        client, public_id, nonce, "papers", pdf_document(pages=3), "r.pdf", "application/pdf"
    )
    answers = {"name": "Ada", "card": [photo], "papers": [document.json()["id"]]}
    assert (await submit(client, public_id, nonce, answers)).status_code == 201
    (row, _) = await upload_rows(app, form["id"])
    generated = await editor_http.post(f"/api/responses/{row.response_id}/generate-pdf")
    assert generated.status_code == 200, generated.text
    reader = PdfReader(io.BytesIO(generated.content))
    assert any(image_xobjects(page) for page in reader.pages), "the photo is on a page"
    text = "".join(page.extract_text() for page in reader.pages)
    assert "PDF document, 3 pages (appended at the end)" in text
    # The answers' pages, then the referral's three.
    assert len(reader.pages) >= 4
    assert [p.mediabox.width for p in reader.pages[-3:]] == [200, 200, 200]


async def test_key_rotation_rewraps_the_files_data_keys(
    editor_http: httpx.AsyncClient, client: httpx.AsyncClient, app: FastAPI
) -> None:
    form = await publish(editor_http, UPLOAD_FIELDS)
    public_id = form["publicId"]
    nonce = await fetch_nonce(client, public_id)
    document = pdf_document()
    sent = await upload(client, public_id, nonce, "papers", document, "r.pdf", "application/pdf")
    assert (
        await submit(client, public_id, nonce, {"papers": [sent.json()["id"]]})
    ).status_code == 201
    (row,) = await upload_rows(app, form["id"])
    assert row.response_id is not None
    state = state_of(app)
    rotated = KeyRing(current=base64.b64decode(generate_key()), previous=(state.keys.current,))
    counts = {c.name: c for c in await rotate_keys(state.db, rotated, also=(UploadBlob,))}
    assert counts["upload_blobs"].rewrapped >= 1  # the database is shared by a worker
    async with state.db.sessions() as session:
        _, data = await open_file(
            session, KeyRing(current=rotated.current), row.response_id, row.id
        )
    assert data == document


async def test_concurrent_copies_of_a_submission_attach_its_files_once(
    editor_http: httpx.AsyncClient, client: httpx.AsyncClient, app: FastAPI
) -> None:
    form = await publish(editor_http, UPLOAD_FIELDS)
    public_id = form["publicId"]
    nonce = await fetch_nonce(client, public_id)
    ids = [
        (await upload(client, public_id, nonce, "papers", photo_with_gps())).json()["id"]
        for _ in range(2)
    ]
    replies = await asyncio.gather(
        *(submit(client, public_id, nonce, {"papers": ids}) for _ in range(6))
    )
    statuses = sorted(r.status_code for r in replies)
    assert statuses.count(201) == 1, statuses
    assert set(statuses) <= {200, 201, 409}, statuses
    assert await response_count(app, form["id"]) == 1
    rows = await upload_rows(app, form["id"])
    assert len({r.response_id for r in rows}) == 1 and rows[0].response_id is not None


async def test_hostile_upload_bodies_get_a_clear_4xx_never_a_500(
    editor_http: httpx.AsyncClient, client: httpx.AsyncClient, app: FastAPI
) -> None:
    form = await publish(editor_http, UPLOAD_FIELDS)
    public_id = form["publicId"]
    nonce = await fetch_nonce(client, public_id)
    url = f"/api/public/forms/{public_id}/files"
    boundary = "xyzBOUNDARYxyz"
    multipart = f"multipart/form-data; boundary={boundary}"

    def body(*parts: tuple[str, bytes]) -> bytes:
        out = b""
        for name, value in parts:
            out += (
                (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n').encode()
                + value
                + b"\r\n"
            )
        return out + f"--{boundary}--\r\n".encode()

    photo = photo_with_gps()
    cases: list[tuple[str, bytes]] = [
        ("multipart/form-data", body(("nonce", nonce.encode()))),  # no boundary
        ("multipart/form-data; boundary=", b"--\r\n"),
        ("text/plain", photo),
        (multipart, b"garbage without any boundary"),
        (multipart, body(("nonce", nonce.encode()), ("field", b"card"))),  # no file
        (multipart, body(("nonce", b"x" * 5000), ("field", b"card"), ("file", photo))),
        (multipart, body(("nonce", nonce.encode()), ("field", "cärd".encode()), ("file", photo))),
        (multipart, body(("nonce", nonce.encode()), ("field", b"card"), ("file", photo))[:-40]),
    ]
    for content_type, content in cases:
        reply = await client.post(url, content=content, headers={"Content-Type": content_type})
        assert reply.status_code == 400, (content_type, content[:80], reply.text)
        assert reply.json()["code"] in {"upload_unreadable", "nonce_invalid"}
    # Unknown and repeated parts are read past; the first copy of each counts.
    extra = body(
        ("nonce", nonce.encode()), ("comment", b"hello"), ("field", b"card"),
        ("field", b"papers"), ("file", photo),
    )  # fmt: skip
    reply = await client.post(url, content=extra, headers={"Content-Type": multipart})
    assert reply.status_code == 201 and reply.json()["fieldId"] == "card"
    # Staff paths with odd ids are 404s.
    for odd in ("x" * 3000, "upl_%00", "..%2F..%2Fetc"):
        assert (await editor_http.get(f"/api/responses/{odd}/files/{odd}")).status_code == 404
        assert (await editor_http.get(f"/api/responses/{odd}/files")).status_code == 404
    for odd in ("%00", "x" * 70):
        reply = await client.post(f"/api/public/forms/{odd}/files", content=extra)
        assert reply.status_code == 404, reply.text
        reply = await client.post(f"/api/public/requests/{odd}/files", content=extra)
        assert reply.status_code == 404, reply.text


async def test_the_retention_round_sweeps_expired_uploads(
    editor_http: httpx.AsyncClient, client: httpx.AsyncClient, app: FastAPI
) -> None:
    form = await publish(editor_http, UPLOAD_FIELDS)
    public_id = form["publicId"]
    nonce = await fetch_nonce(client, public_id)
    stale, fresh = [
        (await upload(client, public_id, nonce, "papers", photo_with_gps())).json()["id"]
        for _ in range(2)
    ]
    state = state_of(app)
    async with state.db.sessions() as session:
        await session.execute(
            update(Upload)
            .where(Upload.id == stale)
            .values(expires_at=utcnow() - timedelta(minutes=1))
        )
        await session.commit()
    # A round of its own (an interval no other test uses), on this app's Redis and database.
    job = PurgeJob(state.db, state.redis, state.keys, Metrics(), 7 * 86400.0 + 13)
    assert await job.run_round() is RoundOutcome.RAN
    assert [r.id for r in await upload_rows(app, form["id"])] == [fresh]
    assert await blob_count(app, [stale]) == 0


async def test_a_nul_byte_in_a_patient_page_path_is_its_404_page(client: httpx.AsyncClient) -> None:
    page = await client.get("/f/%00", headers={"Accept": "text/html"})
    assert page.status_code == 404
