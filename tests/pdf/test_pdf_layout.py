"""PDFs people file: a signature never opens a page alone, long identifiers are never
cut off. Read back per page with pypdf, and word positions with poppler's pdftotext."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pypdf
import pytest

from healthforms.forms.schema import FieldDef
from healthforms.pdf.document import build_document
from healthforms.pdf.render import render_pdf
from tests.support.response_factory import INTAKE_FIELDS, evidence, intake_answers

# The widest Latin capital, at the longest lengths the columns allow (String(40)).
LONG_RESPONSE_ID = "rsp_" + "W" * 36
LONG_FORM_ID = "frm_" + "M" * 36
LONG_CODE = "K7M2Q9QX4B" + "W" * 22
LONG_TITLE = (
    "Comprehensive new patient intake and medical history questionnaire for adults "
    "(including consent to treatment, HIPAA authorisation and financial policy) – Anamnèse"
)
A4_WIDTH_PT = 595.28
MARGIN_PT = 18 / 25.4 * 72


def render(
    raw_fields: list[dict[str, Any]],
    answers: dict[str, Any],
    *,
    title: str = "New patient intake",
    response_id: str = "rsp_test123",
    confirmation: str = "K7M2Q9QX4B",
    form_id: str = "frm_test456",
    organization: str = "Sunrise Family Clinic",
) -> bytes:
    doc = build_document(
        organization=organization,
        title=title,
        description="Please complete before your first visit.",
        version=12,
        response_id=response_id,
        submitted_at=datetime(2026, 11, 25, 19, 54, 37, tzinfo=UTC),
        fields=[FieldDef.model_validate(f) for f in raw_fields],
        answers=answers,
        signatures=evidence(answers),
        confirmation=confirmation,
        form_id=form_id,
    )
    return render_pdf(doc)


def pages_of(pdf: bytes) -> list[pypdf.PageObject]:
    return list(pypdf.PdfReader(io.BytesIO(pdf)).pages)


def image_count(page: pypdf.PageObject) -> int:
    resources = page.get("/Resources")
    xobjects = resources.get("/XObject") if resources is not None else None
    if xobjects is None:
        return 0
    objects = xobjects.get_object()
    return sum(1 for name in objects if objects[name].get_object()["/Subtype"] == "/Image")


def padded(count: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The intake form after `count` short questions: the signature moves down the page."""
    raw = [{"id": f"q{i}", "type": "text", "label": f"Question {i}"} for i in range(count)]
    answers = intake_answers(**{f"q{i}": "short answer" for i in range(count)})
    return raw + INTAKE_FIELDS, answers


def test_a_signature_stays_on_one_page_with_its_label_date_and_the_question_before_it() -> None:
    moved_to_a_later_page = 0
    for count in range(0, 28):
        raw, answers = padded(count)
        pages = pages_of(render(raw, answers))
        (signed,) = [p for p in pages if "Patient signature" in p.extract_text()]
        text = signed.extract_text()
        # Label, image and date line together, and never the first thing on its page:
        # the consent question before it came along.
        assert "Signed at: 2026-11-25T19:54:37Z" in text, count
        assert "Answers hash:" in text, count
        assert image_count(signed) == 1, count
        assert "I consent to treatment" in text, count
        body = [line for line in text.splitlines() if line.strip()]
        assert "I consent to treatment" in body[body.index("Patient signature") - 2], count
        if signed is not pages[0]:
            moved_to_a_later_page += 1
    # The sweep crossed page boundaries (before the fix counts 0-2 left the signature
    # alone at the top of page 2).
    assert moved_to_a_later_page >= 10


def test_a_consent_paragraph_moves_with_the_signature_under_it() -> None:
    consent = "By signing below I consent to treatment and to the clinic's privacy practices."
    moved = 0
    for count in range(0, 28, 2):
        raw, answers = padded(count)
        raw = [f for f in raw if f["id"] not in ("consent", "signature")] + [
            {"id": "terms", "type": "paragraph", "label": consent},
            {"id": "signature", "type": "signature", "label": "Patient signature"},
        ]
        pages = pages_of(render(raw, answers))
        (signed,) = [p for p in pages if "Patient signature" in p.extract_text()]
        assert consent in re.sub(r"\s*\n\s*", " ", signed.extract_text()), count
        assert image_count(signed) == 1, count
        moved += signed is not pages[0]
    assert moved >= 3


def test_a_signature_after_a_long_answer_keeps_its_label_image_and_date_together() -> None:
    # The answer before it runs over pages: it cannot come along, the block still does.
    for lines in range(40, 80, 3):
        history = "\n".join(f"Line {n}: ongoing treatment notes" for n in range(lines))
        answers = intake_answers(history=history)
        raw = [f for f in INTAKE_FIELDS if f["id"] in ("name", "history", "signature")]
        pages = pages_of(render(raw, answers))
        (signed,) = [p for p in pages if "Patient signature" in p.extract_text()]
        assert "Signed at:" in signed.extract_text(), lines
        assert image_count(signed) == 1, lines


def test_long_ids_code_and_title_are_in_the_header_whole() -> None:
    raw, answers = padded(12)
    pdf = render(
        raw,
        answers,
        title=LONG_TITLE,
        response_id=LONG_RESPONSE_ID,
        confirmation=LONG_CODE,
        form_id=LONG_FORM_ID,
    )
    pages = pages_of(pdf)
    assert len(pages) >= 2
    first = pages[0].extract_text()
    for identifier in (LONG_RESPONSE_ID, LONG_CODE, LONG_FORM_ID):
        assert identifier in first, identifier
    assert LONG_TITLE in re.sub(r"\s*\n\s*", " ", first)
    # The running header of every later page: the ids whole, the title wrapped at spaces.
    for page in pages[1:]:
        text = page.extract_text()
        assert LONG_RESPONSE_ID in text
        assert LONG_CODE in text
        assert LONG_TITLE in re.sub(r"\s*\n\s*", " ", text)


def pdftotext_words(pdf: bytes, tmp_path: Path) -> list[tuple[float, str]]:
    """(right edge in pt, word) of every word poppler finds inside the page."""
    path = tmp_path / "response.pdf"
    path.write_bytes(pdf)
    out = subprocess.run(
        ["pdftotext", "-bbox", str(path), "-"],
        check=True,
        capture_output=True,
        timeout=60,
        text=True,
    ).stdout
    return [
        (float(x_max), word)
        for x_max, word in re.findall(r'<word xMin="[\d.]+" yMin="[\d.]+" xMax="([\d.]+)"'
                                      r' yMax="[\d.]+">([^<]*)</word>', out)
    ]  # fmt: skip


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils not installed")
def test_no_identifier_runs_past_the_right_margin(tmp_path: Path) -> None:
    raw, answers = padded(12)
    pdf = render(
        raw,
        answers,
        title=LONG_TITLE,
        response_id=LONG_RESPONSE_ID,
        confirmation=LONG_CODE,
        form_id=LONG_FORM_ID,
        organization="Sunrise Family Clinic and Community Health Centre of the Greater "
        "Riverside Valley Region, Department of Family Medicine and Paediatrics",
    )
    words = pdftotext_words(pdf, tmp_path)
    found = {word for _, word in words}
    assert {LONG_RESPONSE_ID, LONG_CODE} <= found
    assert any(word.startswith(LONG_FORM_ID) for word in found)
    right = A4_WIDTH_PT - MARGIN_PT + 1
    assert [(x, w) for x, w in words if x > right] == []
