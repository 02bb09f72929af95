"""A response's PDF is saved as `<form>_<date>_<confirmation>.pdf`: its own name for
each patient, ASCII in `filename`, the title's letters in `filename*`, no PHI."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import quote

import httpx

from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from healthforms.pdf.filenames import MAX_SLUG, PdfFileName, pdf_filename, slug
from healthforms.responses.models import ResponseRow
from tests.support.response_factory import (
    UNICODE_NAME,
    PublishedForm,
    create_form,
    create_response,
    intake_answers,
)

SENT = datetime(2026, 12, 6, 9, 30, tzinfo=UTC)


def test_the_name_is_form_date_and_code() -> None:
    assert pdf_filename("New patient intake", SENT, "K7M29QX4AB") == PdfFileName(
        ascii="new-patient-intake_2026-12-06_K7M29QX4AB.pdf",
        exact="new-patient-intake_2026-12-06_K7M29QX4AB.pdf",
    )


def test_the_date_is_the_utc_day_it_was_sent() -> None:
    late_in_new_york = datetime(2026, 12, 6, 22, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert pdf_filename("Intake", late_in_new_york, "ABCD").ascii == "intake_2026-12-07_ABCD.pdf"


def test_a_title_outside_ascii_keeps_its_letters_only_in_the_exact_name() -> None:
    name = pdf_filename('Anamnèse: "Erwachsene" / Straße 2026', SENT, "ABCD")
    assert name.ascii == "anamnese-erwachsene-strasse-2026_2026-12-06_ABCD.pdf"
    assert name.exact == "anamnèse-erwachsene-straße-2026_2026-12-06_ABCD.pdf"
    cyrillic = pdf_filename("Анкета пациента", SENT, "ABCD")
    assert cyrillic.ascii == "response_2026-12-06_ABCD.pdf"
    assert cyrillic.exact == "анкета-пациента_2026-12-06_ABCD.pdf"


def test_nothing_a_file_system_or_header_reads_specially_survives() -> None:
    hostile = '../../etc/passwd\r\nX-Injected: 1; filename="evil.exe" \x00 <script> *?|'
    name = pdf_filename(hostile, SENT, "AB-CD\r\n/..")
    for candidate in (name.ascii, name.exact):
        assert candidate == "etc-passwd-x-injected-1-filename-evil-exe-script_2026-12-06_ABCD.pdf"


def test_a_long_title_is_cut_at_a_word() -> None:
    stem = slug("Comprehensive " * 20, ascii_only=True)
    assert len(stem) <= MAX_SLUG
    assert stem.endswith("comprehensive")
    assert slug("x" * 200, ascii_only=False) == "x" * MAX_SLUG


async def code_of(db: Database, response_id: str) -> str:
    async with db.sessions() as session:
        row = await session.get(ResponseRow, response_id)
        assert row is not None
        return row.confirmation


async def test_each_patient_s_pdf_has_its_own_name_without_their_name(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    first = await create_response(db, keys, clinic, intake_answers(), submitted_at=SENT)
    second = await create_response(db, keys, clinic, intake_answers(), submitted_at=SENT)

    names = []
    for response_id in (first, second):
        api = await admin.post(f"/api/responses/{response_id}/generate-pdf")
        page = await admin.get(f"/responses/{response_id}/pdf")
        assert api.status_code == page.status_code == 200
        code = await code_of(db, response_id)
        expected = f'attachment; filename="new-patient-intake_2026-12-06_{code}.pdf"'
        assert api.headers["content-disposition"] == expected
        assert page.headers["content-disposition"] == expected
        names.append(expected)
    assert names[0] != names[1]
    for name in names:
        assert UNICODE_NAME not in name
        assert not {"zoe", "angstrom", "lukasiewicz"} & set(name.replace("_", "-").split("-"))


async def test_a_non_ascii_title_adds_filename_star(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    (form,) = await create_form(db, clinic.organization_id, title="Анкета пациента")
    response_id = await create_response(db, keys, form, intake_answers(), submitted_at=SENT)
    code = await code_of(db, response_id)

    reply = await admin.get(f"/responses/{response_id}/pdf")
    assert reply.status_code == 404  # nothing generated yet: a GET generates nothing
    reply = await admin.post(f"/api/responses/{response_id}/generate-pdf")

    exact = f"анкета-пациента_2026-12-06_{code}.pdf"
    assert reply.headers["content-disposition"] == (
        f'attachment; filename="response_2026-12-06_{code}.pdf"; '
        f"filename*=UTF-8''{quote(exact, safe='')}"
    )
