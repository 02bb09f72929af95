"""The PDF in the language the patient answered in, and the staff copy in the clinic's
(docs/languages.md), read back with pypdf."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import update

from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from healthforms.forms.models import FormVersion
from healthforms.forms.schema import FieldDef
from healthforms.pdf.render import RenderJob, render_job
from healthforms.responses.models import ResponsePdf, ResponseRow
from tests.pdf.test_generate import count_events, pdf_text
from tests.support.response_factory import (
    INTAKE_FIELDS,
    PublishedForm,
    create_response,
    intake_answers,
)

SPANISH: dict[str, Any] = {
    "es": {
        "title": "Admisión de paciente nuevo",
        "fields": {
            "name": {"label": "Nombre completo"},
            "allergies": {
                "label": "Alergias conocidas",
                "options": ["Penicilina", "Látex", "Cacahuetes", "Polen"],
            },
            "smoker": {"label": "¿Fuma?", "options": ["Sí", "No"]},
            "consent": {"label": "Doy mi consentimiento al tratamiento"},
        },
    }
}
BROWSER = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


def _job(language: str, answers: dict[str, Any]) -> RenderJob:
    return RenderJob(
        organization="Clínica Sol",
        title="New patient intake",
        description="",
        version=1,
        response_id="rsp_test",
        submitted_at=datetime(2026, 12, 6, 10, 0, tzinfo=UTC),
        fields=[FieldDef.model_validate(f) for f in INTAKE_FIELDS],
        answers=answers,
        signatures={},
        language=language,
        translations=SPANISH,
    )


def test_the_pdf_prints_labels_options_and_its_own_words_in_spanish() -> None:
    answers = {"name": "Zoë", "allergies": ["Latex"], "smoker": "Yes", "consent": True}
    spanish = pdf_text(render_job(_job("es", answers)))
    for text in (
        "Admisión de paciente nuevo",
        "Nombre completo",
        "Alergias conocidas",
        "Látex",
        "Penicilina",
        "¿Fuma?",
        "Sí",
        "Doy mi consentimiento al tratamiento",
        "Aceptado",
        "Versión del formulario".upper(),
        "Sin respuesta",
        "Página 1 de",
        "Email address",  # no Spanish text: the form's own
    ):
        assert text in spanish, text
    assert "Known allergies" not in spanish and "Page 1 of" not in spanish
    english = pdf_text(render_job(_job("en", answers)))
    for text in ("New patient intake", "Known allergies", "Latex", "Yes", "Agreed", "Page 1 of"):
        assert text in english, text
    assert "Látex" not in english


async def _spanish_response(db: Database, keys: KeyRing, clinic: PublishedForm) -> str:
    async with db.sessions() as session, session.begin():
        await session.execute(
            update(FormVersion)
            .where(FormVersion.id == clinic.version_id)
            .values(translations=SPANISH)
        )
    answers = intake_answers(allergies=["Latex"], smoker="No")
    response_id = await create_response(db, keys, clinic, answers)
    async with db.sessions() as session, session.begin():
        await session.execute(
            update(ResponseRow).where(ResponseRow.id == response_id).values(language="es")
        )
    return response_id


async def test_the_stored_pdf_is_the_patients_and_staff_download_the_clinics_copy(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    response_id = await _spanish_response(db, keys, clinic)
    page = await admin.get(f"/responses/{response_id}", headers=BROWSER)
    assert f'href="/responses/{response_id}/pdf?lang=en"' in page.text
    assert "Answered in Español" in page.text

    generated = await admin.post(f"/api/responses/{response_id}/generate-pdf")
    assert generated.status_code == 200
    assert "Alergias conocidas" in pdf_text(generated.content)

    copy = await admin.get(f"/responses/{response_id}/pdf?lang=en")
    assert copy.status_code == 200
    assert copy.headers["content-type"] == "application/pdf"
    assert copy.headers["cache-control"].startswith("no-store")
    assert " en.pdf" in copy.headers["content-disposition"]
    text = pdf_text(copy.content)
    assert "Known allergies" in text and "Alergias conocidas" not in text
    # The copy is not stored: the stored PDF stays the patient's Spanish one.
    async with db.sessions() as session:
        stored = await session.get(ResponsePdf, response_id)
    assert stored is not None
    again = await admin.get(f"/responses/{response_id}/pdf")
    assert "Alergias conocidas" in pdf_text(again.content)
    assert await count_events(db, "pdf.served", response_id) == 3

    refused = await admin.get(f"/responses/{response_id}/pdf?lang=fr")
    assert refused.status_code == 422
    assert refused.json()["fields"] == {"lang": "unsupported language"}


async def test_an_english_response_offers_no_second_copy(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    response_id = await create_response(db, keys, clinic, intake_answers())
    page = await admin.get(f"/responses/{response_id}", headers=BROWSER)
    assert page.status_code == 200
    assert "pdf-staff-copy" not in page.text
