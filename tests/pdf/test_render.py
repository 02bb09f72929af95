"""The embedded renderer: what a printed response shows, read back with pypdf and pdftoppm."""

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
from PIL import Image

from healthforms.forms.schema import FieldDef
from healthforms.pdf.document import build_document, decode_signature, shown_field_ids
from healthforms.pdf.render import FONT_DIR, render_pdf
from tests.support.response_factory import (
    INTAKE_FIELDS,
    UNICODE_NAME,
    evidence,
    intake_answers,
    signature_data_url,
)

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


def fields(raw: list[dict[str, Any]] | None = None) -> list[FieldDef]:
    return [FieldDef.model_validate(f) for f in (raw or INTAKE_FIELDS)]


def render(answers: dict[str, Any], raw_fields: list[dict[str, Any]] | None = None) -> bytes:
    doc = build_document(
        organization="Sunrise Family Clinic",
        title="New patient intake",
        description="Please complete before your first visit.",
        version=3,
        response_id="rsp_test123",
        submitted_at=datetime(2026, 11, 25, 19, 54, 37, tzinfo=UTC),
        fields=fields(raw_fields),
        answers=answers,
        signatures=evidence(answers),
    )
    return render_pdf(doc)


def text_of(pdf: bytes) -> tuple[int, str]:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    return len(reader.pages), "\n".join(page.extract_text() for page in reader.pages)


def flat(text: str) -> str:
    """Extracted text with line wraps undone, for phrases that may wrap."""
    return re.sub(r"\s+", " ", text)


def test_the_pdf_holds_title_organisation_version_time_and_every_shown_answer() -> None:
    pdf = render(intake_answers())
    assert pdf.startswith(b"%PDF-")
    pages, text = text_of(pdf)
    for expected in (
        "New patient intake",
        "Sunrise Family Clinic",
        "2026-11-25 19:54:37 UTC",
        "rsp_test123",
        "Full name",
        UNICODE_NAME,
        "zoe@example.org",
        "1984-02-29",
        "Known allergies",
        "Penicillin",
        "Latex",
        "Do you smoke?",
        "I consent to treatment",
        "Agreed",
        "Patient signature",
        "Signed at: 2026-11-25T19:54:37Z",
        "IP: 203.0.113.10",
        "Form version hash: " + "a" * 64,
        f"Page 1 of {pages}",
    ):
        assert expected in text, expected
    assert "Appendectomy in 2003" in flat(text)
    # Hidden by showWhen (smoker == "No"): neither the question nor an answer appears.
    assert "Packs per day" not in text


def test_long_text_wraps_onto_further_pages_with_page_numbers() -> None:
    long_history = "\n".join(f"Line {n}: " + "ongoing treatment notes " * 8 for n in range(120))
    pages, text = text_of(render(intake_answers(history=long_history)))
    assert pages >= 3
    for number in range(1, pages + 1):
        assert f"Page {number} of {pages}" in text
    assert "Line 0:" in text and "Line 119:" in text
    # Wrapped, not cut: every line of every page stays inside the page width.
    assert "ongoing treatment notes" in text


def test_a_field_shown_by_its_condition_is_printed() -> None:
    pages, text = text_of(render(intake_answers(smoker="Yes", packs=2)))
    assert "Packs per day (smokers only)" in text
    assert "\n2\n" in text or "\n2 " in text


def test_unanswered_and_unticked_fields_say_so() -> None:
    answers = intake_answers(consent=False, allergies=[])
    del answers["email"]
    _, text = text_of(render(answers))
    assert "Not answered" in text
    assert "Not agreed" in text


def test_shown_fields_follow_chained_conditions() -> None:
    raw: list[dict[str, Any]] = [
        {"id": "a", "type": "radio", "label": "A", "options": ["x", "y"]},
        {"id": "b", "type": "text", "label": "B", "showWhen": {"field": "a", "equals": "x"}},
        {"id": "c", "type": "text", "label": "C", "showWhen": {"field": "b", "notEquals": "n"}},
        {"id": "d", "type": "text", "label": "D", "showWhen": {"field": "a", "notEquals": "x"}},
        {
            "id": "e",
            "type": "checkbox",
            "label": "E",
            "options": ["p", "q"],
        },
        {"id": "f", "type": "text", "label": "F", "showWhen": {"field": "e", "contains": "q"}},
    ]
    # b is hidden, so it counts as unanswered: "b is not n" holds and c was shown, as the
    # patient page showed it and the server asked for it (forms/conditions.py).
    assert shown_field_ids(fields(raw), {"a": "y", "e": ["p"]}) == {"a", "c", "d", "e"}
    assert shown_field_ids(fields(raw), {"a": "x", "b": "m", "e": ["q"]}) == {
        "a",
        "b",
        "c",
        "e",
        "f",
    }


def test_an_unreadable_signature_never_breaks_the_pdf() -> None:
    for broken in (
        "data:image/png;base64,!!!not-base64",
        "data:image/png;base64,aGVsbG8=",  # "hello": not a PNG
        "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42m",
        "javascript:alert(1)",
    ):
        _, text = text_of(render(intake_answers(signature=broken)))
        assert "Signature image could not be read" in text
    assert decode_signature(signature_data_url()) is not None


def test_a_huge_signature_canvas_is_refused_before_decoding() -> None:
    big = Image.new("L", (5000, 1000), 255)
    out = io.BytesIO()
    big.save(out, format="PNG")
    import base64

    url = "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()
    assert decode_signature(url) is None


def test_control_characters_and_scripts_outside_the_font_do_not_break_rendering() -> None:
    answers = intake_answers(
        name="Ωμέγα Привет \x00\x07\x1b[31m naïve",
        history="tab\there\r\nCRLF line\u200b zero-width \U0001f600 emoji 漢字",
    )
    _, text = text_of(render(answers))
    assert "Ωμέγα Привет" in text
    assert "\x00" not in text and "\x1b" not in text


def test_the_version_labels_and_options_are_used_not_the_current_draft() -> None:
    renamed = [
        {**f, "label": "Patient's legal name"} if f["id"] == "name" else f for f in INTAKE_FIELDS
    ]
    _, text = text_of(render(intake_answers(), renamed))
    assert "Patient's legal name" in text
    assert "Full name" not in text


def test_the_fonts_and_their_licence_ship_inside_the_package() -> None:
    names = {p.name for p in FONT_DIR.iterdir()}
    assert {"DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "LICENSE"} <= names
    assert "Bitstream" in (FONT_DIR / "LICENSE").read_text()


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="poppler-utils not installed")
def test_pdftoppm_renders_page_one(tmp_path: Path) -> None:
    pdf_path = tmp_path / "response.pdf"
    pdf_path.write_bytes(render(intake_answers()))
    subprocess.run(
        ["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", str(pdf_path), str(tmp_path / "p")],
        check=True,
        capture_output=True,
        timeout=60,
    )
    page = next(tmp_path.glob("p*.png"))
    with Image.open(page) as image:
        # A4 at 60 dpi: 497 x 702 px, and not blank: text and the signature leave ink.
        assert image.size == (497, 702)
        grey = image.convert("L")
        histogram = grey.histogram()
        dark = sum(histogram[:128])
        assert dark > 3000
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(page, ARTIFACTS / "pdf-page1.png")
