"""Both PDF renderers show a response's files: photos drawn, PDF documents listed."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from pypdf import PdfReader

from healthforms.forms.schema import FieldDef
from healthforms.images import clean_image
from healthforms.pdf.document import PdfDocument, PdfFile, build_document
from healthforms.pdf.gotenberg import render_html
from healthforms.pdf.render import render_pdf
from tests.uploads.helpers import UPLOAD_FIELDS, pdf_document, photo_with_gps

PHOTO = "upl_photo000000001"
PAPER = "upl_paper000000001"
BROKEN = "upl_broken00000001"


def document(files: dict[str, PdfFile]) -> PdfDocument:
    return build_document(
        organization="Clinic",
        title="Card intake",
        description="",
        version=1,
        response_id="rsp_files",
        submitted_at=datetime(2026, 12, 6, 12, 0, tzinfo=UTC),
        fields=[FieldDef.model_validate(f) for f in UPLOAD_FIELDS],
        answers={"name": "Ada", "card": [PHOTO], "papers": [PAPER, BROKEN]},
        signatures={},
        files=files,
    )


def sample_files() -> dict[str, PdfFile]:
    photo = clean_image(photo_with_gps((800, 500)))
    return {
        PHOTO: PdfFile(photo.media_type, photo.data),
        PAPER: PdfFile("application/pdf", pdf_document(pages=3), pages=3),
        BROKEN: PdfFile("image/jpeg", None),  # would not decrypt
    }


def test_the_model_lists_each_answers_files_in_order_and_in_words() -> None:
    doc = document(sample_files())
    card, papers = (item for item in doc.items if item.field_id in ("card", "papers"))
    assert [f.media_type for f in card.files] == ["image/jpeg"]
    assert card.text == "1 photo"
    assert papers.text == "1 photo, PDF document (3 pages)"
    # An id the response's files do not hold is not drawn (and never printed as an id).
    assert document({}).items[1].files == () and document({}).items[1].text is None


def test_the_embedded_renderer_draws_photos_and_appends_documents() -> None:
    reader = PdfReader(io.BytesIO(render_pdf(document(sample_files()))))
    text = "".join(page.extract_text() for page in reader.pages)
    assert "PDF document, 3 pages (appended at the end)" in text
    assert "Photo could not be read" in text
    assert "upl_" not in text
    assert [page.mediabox.width for page in reader.pages[-3:]] == [200, 200, 200]


def test_the_gotenberg_html_embeds_photos_as_data_urls() -> None:
    page, _ = render_html(document(sample_files()))
    assert 'class="photo" alt="Attached photo" src="data:image/jpeg;base64,/9j/' in page
    assert "PDF document, 3 pages (attached to the response)" in page
    assert "Photo could not be read" in page
    assert "upl_" not in page
