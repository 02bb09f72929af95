"""POST /api/forms/{id}/responses/export-pdfs: a ZIP with one PDF per selected response,
made as generate-pdf makes them, audited as one event, for editors and admins."""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pypdf
import pytest
from sqlalchemy import select, update

from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from healthforms.responses.models import ResponsePdf, ResponseRow
from healthforms.security.principal import Role
from tests.exports.helpers import detail_of, events
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


def zip_url(form_id: str) -> str:
    return f"/api/forms/{form_id}/responses/export-pdfs"


def pdf_text(content: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(content))
    return "\n".join(page.extract_text() for page in reader.pages)


async def confirmations(db: Database, ids: list[str]) -> dict[str, str]:
    async with db.sessions() as session:
        rows = await session.execute(
            select(ResponseRow.id, ResponseRow.confirmation).where(ResponseRow.id.in_(ids))
        )
        return {row_id: code for row_id, code in rows}


async def stored_pdfs(db: Database, ids: list[str]) -> set[str]:
    async with db.sessions() as session:
        rows = await session.execute(
            select(ResponsePdf.response_id).where(ResponsePdf.response_id.in_(ids))
        )
        return set(rows.scalars())


async def some_responses(db: Database, keys: KeyRing, form: PublishedForm, count: int) -> list[str]:
    base = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    ids = []
    for n in range(count):
        answers = intake_answers(marker=f"marker-{n}")
        ids.append(
            await create_response(
                db, keys, form, answers, evidence(answers), submitted_at=base + timedelta(hours=n)
            )
        )
    return ids


async def test_the_zip_holds_one_valid_pdf_per_selected_response(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    ids = await some_responses(db, keys, clinic, 3)
    # One already has its PDF: the ZIP serves that one again, byte for byte.
    stored = await admin.post(f"/api/responses/{ids[0]}/generate-pdf")
    assert stored.status_code == 200
    selected = [ids[0], ids[2]]

    reply = await admin.post(zip_url(clinic.form_id), json={"responseIds": selected})

    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/zip"
    assert reply.headers["cache-control"] == "no-store"
    assert reply.headers["content-disposition"].startswith(
        'attachment; filename="New patient intake PDFs '
    )
    codes = await confirmations(db, selected)
    with zipfile.ZipFile(io.BytesIO(reply.content)) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        # Newest first, as the list shows them; named by response id and confirmation.
        assert names == [f"{i}_{codes[i]}.pdf" for i in reversed(selected)]
        contents = {name: archive.read(name) for name in names}
    first = contents[f"{ids[0]}_{codes[ids[0]]}.pdf"]
    assert first == stored.content
    for n, response_id in ((0, ids[0]), (2, ids[2])):
        text = pdf_text(contents[f"{response_id}_{codes[response_id]}.pdf"])
        assert UNICODE_NAME in text
        assert f"marker-{n}" in text
    # The one made for the ZIP is stored, as generate-pdf would have stored it.
    assert await stored_pdfs(db, ids) == {ids[0], ids[2]}
    assert len(await events(db, "pdf.generated", ids[2])) == 1


async def test_one_event_names_every_pdf_in_the_zip_and_no_phi(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    ids = await some_responses(db, keys, clinic, 2)

    reply = await admin.post(zip_url(clinic.form_id), json={"responseIds": ids})

    assert reply.status_code == 200
    (event,) = await events(db, "responses.pdfs_exported", clinic.form_id)
    assert event.resource_type == "form"
    assert event.outcome == "success"
    assert detail_of(event) == {"count": 2, "responseIds": list(reversed(ids))}
    assert UNICODE_NAME not in (event.detail or "")
    for response_id in ids:
        # Delivered inside the export's event, not one `pdf.served` per PDF.
        assert await events(db, "pdf.served", response_id) == []


async def test_a_response_that_will_not_decrypt_is_a_note_in_the_zip(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    good, broken = await some_responses(db, keys, clinic, 2)
    async with db.sessions() as session, session.begin():
        await session.execute(
            update(ResponseRow).where(ResponseRow.id == broken).values(ciphertext=b"\x00" * 64)
        )

    reply = await admin.post(zip_url(clinic.form_id), json={"responseIds": [good, broken]})

    assert reply.status_code == 200
    codes = await confirmations(db, [good, broken])
    with zipfile.ZipFile(io.BytesIO(reply.content)) as archive:
        assert archive.namelist() == [
            f"{broken}_{codes[broken]} NOT INCLUDED.txt",
            f"{good}_{codes[good]}.pdf",
        ]
        note = archive.read(f"{broken}_{codes[broken]} NOT INCLUDED.txt").decode()
    assert "could not be decrypted" in note
    (event,) = await events(db, "responses.pdfs_exported", clinic.form_id)
    assert detail_of(event) == {"count": 1, "responseIds": [good], "leftOutIds": [broken]}


async def test_entry_names_never_leave_the_archive(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    (response_id,) = await some_responses(db, keys, clinic, 1)
    async with db.sessions() as session, session.begin():
        await session.execute(
            update(ResponseRow)
            .where(ResponseRow.id == response_id)
            .values(confirmation="../../..\\etc/passwd")
        )

    reply = await admin.post(zip_url(clinic.form_id), json={"responseIds": [response_id]})

    with zipfile.ZipFile(io.BytesIO(reply.content)) as archive:
        (name,) = archive.namelist()
    assert name == f"{response_id}_etcpasswd.pdf"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"responseIds": []},
        {"responseIds": "rsp_1"},
        {"responseIds": [1, 2]},
        {"responseIds": [None]},
        {"responseIds": [""]},
        {"responseIds": ["x" * 65]},
        {"responseIds": [f"rsp_{n}" for n in range(101)]},
        ["rsp_1"],
        "rsp_1",
        None,
    ],
)
async def test_a_bad_selection_is_422_naming_response_ids(
    body: Any, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    reply = await admin.post(zip_url(clinic.form_id), json=body)
    assert reply.status_code == 422, reply.text
    assert reply.json()["code"] == "validation_error"
    assert set(reply.json()["fields"]) == {"responseIds"}


async def test_malformed_json_is_400(clinic: PublishedForm, admin: httpx.AsyncClient) -> None:
    reply = await admin.post(
        zip_url(clinic.form_id),
        content=b'{"responseIds": [',
        headers={"Content-Type": "application/json"},
    )
    assert reply.status_code == 400
    assert reply.json()["code"] == "bad_request"


async def test_a_selection_repeating_an_id_holds_it_once(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    (response_id,) = await some_responses(db, keys, clinic, 1)
    reply = await admin.post(
        zip_url(clinic.form_id), json={"responseIds": [response_id, response_id]}
    )
    with zipfile.ZipFile(io.BytesIO(reply.content)) as archive:
        assert len(archive.namelist()) == 1


async def test_responses_of_another_form_or_clinic_are_404_and_nothing_is_made(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    (mine,) = await some_responses(db, keys, clinic, 1)
    other_form = (await create_form(db, clinic.organization_id, title="Other"))[0]
    (other,) = await some_responses(db, keys, other_form, 1)
    elsewhere = (await create_form(db, await create_organization(db)))[0]
    (foreign,) = await some_responses(db, keys, elsewhere, 1)

    for form_id, selection in (
        (clinic.form_id, [mine, other]),  # another form of the same clinic
        (clinic.form_id, [mine, foreign]),  # another clinic's response
        (clinic.form_id, [mine, "rsp_does-not-exist"]),
        (elsewhere.form_id, [foreign]),  # another clinic's form
    ):
        reply = await admin.post(zip_url(form_id), json={"responseIds": selection})
        assert reply.status_code == 404, selection
        assert reply.json() == {"error": "Not found.", "code": "not_found"}
    assert await stored_pdfs(db, [mine, other, foreign]) == set()
    assert await events(db, "responses.pdfs_exported", clinic.form_id) == []


async def test_a_viewer_may_not_download_pdfs_in_a_zip(
    db: Database, keys: KeyRing, clinic: PublishedForm, staff: StaffFactory
) -> None:
    (response_id,) = await some_responses(db, keys, clinic, 1)
    async with staff(clinic.organization_id, Role.VIEWER) as viewer:
        reply = await viewer.post(zip_url(clinic.form_id), json={"responseIds": [response_id]})
    assert reply.status_code == 403
    assert reply.json()["code"] == "forbidden"
    assert await stored_pdfs(db, [response_id]) == set()


async def test_without_the_csrf_token_the_zip_is_refused(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    (response_id,) = await some_responses(db, keys, clinic, 1)
    reply = await admin.post(
        zip_url(clinic.form_id),
        json={"responseIds": [response_id]},
        headers={"X-CSRF-Token": ""},
    )
    assert reply.status_code == 403
    assert reply.json()["code"] == "csrf_invalid"


async def test_each_pdf_the_zip_must_render_spends_a_pdf_token(app_with: AppWith) -> None:
    """The request's token pays for its first render and each further render takes one
    more; stored PDFs cost nothing more. When the bucket is empty the ZIP is 429 and the
    PDFs made so far are kept, so asking again later goes on from there."""
    async with app_with(rate_limit_pdf="4/h+0") as app:  # no token comes back meanwhile
        db: Database = app.state.hf.db
        organization_id = await create_organization(db)
        form = (await create_form(db, organization_id))[0]
        ids = await some_responses(db, app.state.hf.keys, form, 5)
        async with signed_in_client(app, organization_id) as (http, _):
            # Two renders: the request's token and one more (2 of 4 spent).
            first = await http.post(zip_url(form.form_id), json={"responseIds": ids[:2]})
            # The request's token (3), two stored PDFs (free), a render on the request's
            # token, one on the last token (4), and no token for the fifth.
            refused = await http.post(zip_url(form.form_id), json={"responseIds": ids})
        exported = await events(db, "responses.pdfs_exported", form.form_id)
        made = await stored_pdfs(db, ids)
    assert first.status_code == 200
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    assert len(made) == 4
    assert [detail_of(e)["count"] for e in exported] == [2]  # the refused ZIP sent nothing
