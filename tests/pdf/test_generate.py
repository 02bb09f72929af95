"""POST /api/responses/{id}/generate-pdf: one generation under the lock, stored, served again."""

from __future__ import annotations

import asyncio
import hashlib
import io
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import pypdf
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import func, select, update

from healthforms.audit.models import AuditEventRow
from healthforms.crypto.envelope import Sealed, open_sealed, pdf_aad
from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from healthforms.responses.models import ResponsePdf, ResponseRow
from healthforms.security.fencing import LockFence
from healthforms.security.locks import PDF_LOCK_KEY
from healthforms.security.principal import Role
from tests.support.response_factory import (
    UNICODE_NAME,
    PublishedForm,
    create_form,
    create_organization,
    create_response,
    evidence,
    intake_answers,
)
from tests.support.response_fixtures import AppWith, StaffFactory
from tests.support.staff import signed_in_client

IN_PROGRESS = {"error": "PDF generation already in progress", "code": "pdf_in_progress"}


async def count_events(db: Database, action: str, resource_id: str) -> int:
    async with db.sessions() as session:
        return int(
            (
                await session.execute(
                    select(func.count())
                    .select_from(AuditEventRow)
                    .where(AuditEventRow.action == action, AuditEventRow.resource_id == resource_id)
                )
            ).scalar_one()
        )


def pdf_text(content: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(content))
    return "\n".join(page.extract_text() for page in reader.pages)


async def test_generate_returns_the_pdf_then_serves_the_same_bytes_again(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    answers = intake_answers()
    response_id = await create_response(db, keys, clinic, answers, evidence(answers))

    first = await admin.post(f"/api/responses/{response_id}/generate-pdf")
    second = await admin.post(f"/api/responses/{response_id}/generate-pdf")

    assert first.status_code == 200
    assert first.headers["content-type"] == "application/pdf"
    assert first.headers["cache-control"] == "no-store"
    assert first.headers["content-disposition"].startswith(
        'attachment; filename="new-patient-intake_'
    )
    assert first.content.startswith(b"%PDF-")
    assert second.status_code == 200
    assert second.content == first.content
    text = pdf_text(first.content)
    assert "New patient intake" in text
    assert UNICODE_NAME in text
    assert "zoe@example.org" in text
    assert await count_events(db, "pdf.generated", response_id) == 1
    assert await count_events(db, "pdf.served", response_id) == 2


async def test_ten_concurrent_requests_generate_exactly_once(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    # A long answer makes the render take long enough for the others to meet the lock.
    answers = intake_answers(history="Chronic condition, see notes. " * 2000)
    response_id = await create_response(db, keys, clinic, answers, evidence(answers))

    replies = await asyncio.gather(
        *(admin.post(f"/api/responses/{response_id}/generate-pdf") for _ in range(10))
    )

    statuses = sorted(r.status_code for r in replies)
    assert set(statuses) <= {200, 409}, statuses
    ok = [r for r in replies if r.status_code == 200]
    busy = [r for r in replies if r.status_code == 409]
    assert ok, statuses
    assert busy, statuses  # the 10 met while the one generation ran
    assert len({r.content for r in ok}) == 1
    for reply in busy:
        assert reply.json() == IN_PROGRESS
    assert await count_events(db, "pdf.generated", response_id) == 1
    assert await count_events(db, "pdf.served", response_id) == len(ok)
    async with db.sessions() as session:
        stored = await session.get(ResponsePdf, response_id)
    assert stored is not None
    assert stored.sha256 == hashlib.sha256(ok[0].content).hexdigest()
    # Afterwards everyone gets the stored one.
    again = await admin.post(f"/api/responses/{response_id}/generate-pdf")
    assert again.status_code == 200 and again.content == ok[0].content


async def test_a_held_pdf_lock_answers_409_until_it_is_released(
    app: FastAPI,
    db: Database,
    keys: KeyRing,
    clinic: PublishedForm,
    admin: httpx.AsyncClient,
    redis_client: Redis,
) -> None:
    response_id = await create_response(db, keys, clinic, intake_answers())
    lock_key = app.state.hf.redis.key(PDF_LOCK_KEY.format(response_id=response_id))
    assert lock_key.endswith(f"lock:pdf-gen:{{{response_id}}}")
    await redis_client.set(lock_key, "another-instance", px=60_000)

    busy = await admin.post(f"/api/responses/{response_id}/generate-pdf")
    assert busy.status_code == 409
    assert busy.json() == IN_PROGRESS
    assert await count_events(db, "lock.conflict", response_id) == 1

    await redis_client.delete(lock_key)
    done = await admin.post(f"/api/responses/{response_id}/generate-pdf")
    assert done.status_code == 200
    assert await count_events(db, "pdf.generated", response_id) == 1
    # The lock is released after the generation and had a TTL while held.
    assert await redis_client.exists(lock_key) == 0


async def test_a_fenced_out_holder_cannot_store_its_pdf(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    response_id = await create_response(db, keys, clinic, intake_answers())
    # A newer lock holder has already written with a higher fencing number.
    async with db.sessions() as session, session.begin():
        resource = PDF_LOCK_KEY.format(response_id=response_id)
        session.add(LockFence(resource=resource, fence=10**18))

    reply = await admin.post(f"/api/responses/{response_id}/generate-pdf")

    assert reply.status_code == 409
    assert reply.json() == IN_PROGRESS
    async with db.sessions() as session:
        assert await session.get(ResponsePdf, response_id) is None
    assert await count_events(db, "pdf.generated", response_id) == 0


async def test_the_stored_pdf_is_encrypted_and_bound_to_its_response(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    marker = "MARKER-pdf-Œuvre"
    response_id = await create_response(db, keys, clinic, intake_answers(marker, name=marker))
    reply = await admin.post(f"/api/responses/{response_id}/generate-pdf")
    assert reply.status_code == 200
    assert marker in pdf_text(reply.content)

    async with db.sessions() as session:
        stored = await session.get(ResponsePdf, response_id)
    assert stored is not None
    for blob in (stored.ciphertext, stored.wrapped_key):
        assert b"MARKER" not in blob
        assert b"%PDF" not in blob
        assert b"FlateDecode" not in blob
    assert stored.size_bytes == len(reply.content)
    assert stored.fence >= 1
    sealed = Sealed(stored.ciphertext, stored.wrapped_key, stored.key_id)
    assert open_sealed(keys, sealed, pdf_aad(response_id)) == reply.content


async def test_a_tampered_stored_pdf_fails_cleanly(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    response_id = await create_response(db, keys, clinic, intake_answers())
    assert (await admin.post(f"/api/responses/{response_id}/generate-pdf")).status_code == 200
    async with db.sessions() as session, session.begin():
        stored = await session.get(ResponsePdf, response_id)
        assert stored is not None
        data = bytearray(stored.ciphertext)
        data[len(data) // 2] ^= 0x04
        await session.execute(
            update(ResponsePdf)
            .where(ResponsePdf.response_id == response_id)
            .values(ciphertext=bytes(data))
        )

    reply = await admin.post(f"/api/responses/{response_id}/generate-pdf")
    assert reply.status_code == 409
    assert reply.json()["code"] == "response_unreadable"
    assert await count_events(db, "pdf.served", response_id) == 1


async def test_the_pdf_uses_the_labels_of_the_version_the_patient_answered(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    v1, v2 = await create_form(
        db,
        clinic.organization_id,
        title="Consent",
        versions=2,
        labels_by_version={1: {"name": "Your name (v1)"}, 2: {"name": "Legal name (v2)"}},
    )
    old = await create_response(db, keys, v1, intake_answers())
    new = await create_response(db, keys, v2, intake_answers())

    old_text = pdf_text((await admin.post(f"/api/responses/{old}/generate-pdf")).content)
    new_text = pdf_text((await admin.post(f"/api/responses/{new}/generate-pdf")).content)

    assert "Your name (v1)" in old_text and "Legal name (v2)" not in old_text
    assert "Legal name (v2)" in new_text and "Your name (v1)" not in new_text


async def test_viewers_may_download_and_the_file_is_named_after_form_date_and_code(
    db: Database, keys: KeyRing, clinic: PublishedForm, staff: StaffFactory
) -> None:
    form = (await create_form(db, clinic.organization_id, title='Anamnèse: "Erwachsene" / 2026'))[0]
    submitted = datetime(2026, 11, 25, 23, 54, 37, tzinfo=UTC)
    response_id = await create_response(db, keys, form, intake_answers(), submitted_at=submitted)
    async with db.sessions() as session:
        row = await session.get(ResponseRow, response_id)
        assert row is not None
        code = row.confirmation
    async with staff(clinic.organization_id, Role.VIEWER) as viewer:
        api = await viewer.post(f"/api/responses/{response_id}/generate-pdf")
        page = await viewer.get(f"/responses/{response_id}/pdf")
    assert page.status_code == 200
    assert page.headers["content-type"] == "application/pdf"
    # API.md "Pages": named after the form, the date and the confirmation code; the
    # title's accents in filename* only (RFC 5987), an ASCII slug in filename.
    name = f"anamnèse-erwachsene-2026_2026-11-25_{code}.pdf"
    assert page.headers["content-disposition"] == (
        f'attachment; filename="anamnese-erwachsene-2026_2026-11-25_{code}.pdf"; '
        f"filename*=UTF-8''{quote(name)}"
    )
    assert api.headers["content-disposition"] == page.headers["content-disposition"]
    assert api.content == page.content


async def test_generate_pdf_spends_the_pdf_rate_limit_policy(app_with: AppWith) -> None:
    async with app_with(rate_limit_pdf="2/min+0") as app:
        db: Database = app.state.hf.db
        org = await create_organization(db)
        form = (await create_form(db, org))[0]
        response_id = await create_response(db, app.state.hf.keys, form, intake_answers())
        async with signed_in_client(app, org) as (http, _):
            url = f"/api/responses/{response_id}/generate-pdf"
            assert (await http.post(url)).status_code == 200
            # Downloading the stored PDF generates nothing, so it spends no pdf token.
            for _ in range(3):
                assert (await http.get(f"/responses/{response_id}/pdf")).status_code == 200
            assert (await http.post(url)).status_code == 200
            refused = await http.post(url)
            # Other routes are not held back by the pdf policy.
            assert (await http.get(f"/api/responses/{response_id}")).status_code == 200
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1


async def test_a_field_definition_that_no_longer_validates_still_prints_its_answer(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    fields: list[dict[str, Any]] = [
        {"id": "name", "type": "text", "label": "Full name"},
        {"id": "mood", "type": "rating-from-the-future", "label": "Mood today", "stars": 5},
    ]
    form = (await create_form(db, clinic.organization_id, fields=fields))[0]
    response_id = await create_response(db, keys, form, {"name": UNICODE_NAME, "mood": 4})
    reply = await admin.post(f"/api/responses/{response_id}/generate-pdf")
    assert reply.status_code == 200
    text = pdf_text(reply.content)
    assert "Mood today" in text and UNICODE_NAME in text
