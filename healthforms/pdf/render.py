"""The embedded PDF renderer: fpdf2 with a bundled Unicode font, no external service.

Pure Python and CPU-bound (about 12 s of CPU per MiB of answer text): the service runs
`render_job` in a child process killed at its time limit (processes.py, pdf/service.py),
so the event loop keeps serving and a hostile response cannot hold a core. The fonts
(DejaVu Sans, see fonts/LICENSE) ship inside the package, so a fresh machine needs
nothing else to print any Latin, Greek or Cyrillic name.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from healthforms.forms.schema import LAYOUT_TYPES, FieldDef, FieldType
from healthforms.forms.translations import localize
from healthforms.languages import DEFAULT_LANGUAGE, N_, Message, translate
from healthforms.pdf.document import NOT_ANSWERED, PdfDocument, PdfItem, build_document

FONT_DIR = Path(__file__).parent / "fonts"
FONT = "DejaVu"

_MARGIN = 18.0
_INK = (20, 24, 31)
_MUTED = (95, 104, 118)
_RULE = (210, 214, 220)
_SIGNATURE_MAX_W = 80.0
_SIGNATURE_MAX_H = 30.0


class _ResponsePdf(FPDF):
    """A4 page with a running header (after page 1) and a "Page n of N" footer."""

    def __init__(self, doc: PdfDocument) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.doc = doc
        self.set_margins(_MARGIN, _MARGIN, _MARGIN)
        self.set_auto_page_break(auto=True, margin=20)
        self.add_font(FONT, "", str(FONT_DIR / "DejaVuSans.ttf"))
        self.add_font(FONT, "B", str(FONT_DIR / "DejaVuSans-Bold.ttf"))
        # Metadata carries the form, never an answer (a PDF index must not leak PHI).
        self.set_title(doc.title)
        self.set_creator("healthforms")
        self.set_author(doc.organization)

    def _t(self, message: Message) -> str:
        """A fixed text of the PDF in the document's language."""
        return translate(message, self.doc.language)

    def header(self) -> None:
        if self.page_no() == 1:
            return
        self.set_font(FONT, "", 8)
        self.set_text_color(*_MUTED)
        self.cell(
            0,
            5,
            self._t(N_("{title}  ·  Response {id}", title=self.doc.title, id=self.doc.response_id)),
            new_x=XPos.LMARGIN,
            new_y=YPos.NEXT,
        )
        self._rule()
        self.ln(3)

    def footer(self) -> None:
        self.set_y(-14)
        self.set_font(FONT, "", 8)
        self.set_text_color(*_MUTED)
        width = self.w - 2 * _MARGIN
        self.cell(
            width / 2,
            5,
            self._t(
                N_(
                    "{clinic}  ·  version {version}",
                    clinic=self.doc.organization,
                    version=self.doc.version,
                )
            ),
        )
        self.cell(
            width / 2,
            5,
            self._t(N_("Page {page} of {pages}", page=self.page_no(), pages="{nb}")),
            align="R",
        )

    def _rule(self) -> None:
        self.set_draw_color(*_RULE)
        self.set_line_width(0.2)
        self.line(_MARGIN, self.get_y(), self.w - _MARGIN, self.get_y())

    # Page 1 -------------------------------------------------------------------------------

    def title_block(self) -> None:
        doc = self.doc
        self.set_font(FONT, "", 9)
        self.set_text_color(*_MUTED)
        self.multi_cell(0, 5, doc.organization, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(1)
        self.set_font(FONT, "B", 18)
        self.set_text_color(*_INK)
        self.multi_cell(0, 8, doc.title, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        if doc.description.strip():
            self.ln(1)
            self.set_font(FONT, "", 10)
            self.set_text_color(*_MUTED)
            self.multi_cell(0, 5, doc.description, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(3)
        self.set_font(FONT, "", 9)
        self.set_text_color(*_INK)
        pairs = (
            (self._t(N_("Form version")), str(doc.version)),
            (self._t(N_("Submitted")), doc.submitted_text),
            (self._t(N_("Response")), doc.response_id),
        )
        width = (self.w - 2 * _MARGIN) / len(pairs)
        top = self.get_y()
        self.set_fill_color(244, 246, 249)
        self.rect(_MARGIN, top, self.w - 2 * _MARGIN, 13, style="F")
        for index, (name, value) in enumerate(pairs):
            x = _MARGIN + index * width + 3
            self.set_xy(x, top + 2)
            self.set_font(FONT, "", 7.5)
            self.set_text_color(*_MUTED)
            self.cell(width - 6, 4, name.upper())
            self.set_xy(x, top + 6.5)
            self.set_font(FONT, "B", 9)
            self.set_text_color(*_INK)
            self.cell(width - 6, 5, value)
        self.set_xy(_MARGIN, top + 13 + 6)

    # Items --------------------------------------------------------------------------------

    def _lines(self, text: str, size: float, bold: bool = False, most: int = 4) -> int:
        """About how many lines `text` takes (at most `most`): cheap, for page breaks only."""
        self.set_font(FONT, "B" if bold else "", size)
        width = self.w - self.l_margin - self.r_margin
        lines = 0
        for paragraph in text.split("\n", most)[:most]:
            lines += max(1, math.ceil(self.get_string_width(paragraph[:400]) / width))
            if lines >= most:
                return most
        return lines

    def _estimate(self, item: PdfItem) -> float:
        """Height the item needs on this page; long answers may continue on the next."""
        height = 5 * self._lines(item.label, 10, bold=True) + 1.5
        if item.kind is FieldType.SIGNATURE:
            height += _SIGNATURE_MAX_H + 22
        elif item.choices:
            height += 6 * len(item.choices)
        else:
            height += 5.5 * self._lines(item.text or self._t(NOT_ANSWERED), 11)
        return height + 3

    def block(self, item: PdfItem) -> None:
        """A heading, page title or paragraph of the form: no answer, no rule."""
        if item.kind is FieldType.PARAGRAPH:
            self.set_font(FONT, "", 9.5)
            self.set_text_color(*_INK)
            self.multi_cell(0, 4.8, item.label, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            self.ln(4)
            return
        # A title is kept with at least the first lines of what follows it.
        if self.get_y() + 7 * self._lines(item.label, 13, bold=True) + 25 > self.page_break_trigger:
            self.add_page()
        self.ln(2)
        self.set_font(FONT, "B", 13)
        self.set_text_color(*_INK)
        self.multi_cell(0, 7, item.label, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(3)

    def item(self, item: PdfItem) -> None:
        if item.kind in LAYOUT_TYPES:
            self.block(item)
            return
        if self.get_y() + self._estimate(item) > self.page_break_trigger and self.get_y() > 40:
            self.add_page()
        self.set_font(FONT, "B", 10)
        self.set_text_color(*_INK)
        self.multi_cell(0, 5, item.label, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(1.5)
        if item.kind is FieldType.SIGNATURE:
            self._signature(item)
        elif item.choices:
            for option, ticked in item.choices:
                self._tick_line(option, ticked)
        elif item.checked is not None:
            self._tick_line(
                self._t(N_("Agreed")) if item.checked else self._t(N_("Not agreed")), item.checked
            )
        else:
            self._answer_text(item.text)
        self.ln(3)
        self._rule()
        self.ln(4)

    def _answer_text(self, text: str | None) -> None:
        self.set_font(FONT, "", 11)
        if text is None:
            self.set_text_color(*_MUTED)
            text = self._t(NOT_ANSWERED)
        else:
            self.set_text_color(*_INK)
        self.multi_cell(0, 5.5, text, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def _tick_line(self, text: str, ticked: bool) -> None:
        """A drawn box (with a drawn tick), then the option: no glyph font needed."""
        if self.get_y() + 6 > self.page_break_trigger:
            self.add_page()
        x, y, size = self.l_margin, self.get_y() + 0.8, 3.6
        self.set_draw_color(*_INK)
        self.set_line_width(0.3)
        self.rect(x, y, size, size)
        if ticked:
            self.set_line_width(0.55)
            self.line(x + 0.7, y + 1.9, x + 1.5, y + 2.9)
            self.line(x + 1.5, y + 2.9, x + 3.0, y + 0.7)
        self.set_xy(x + size + 2.5, self.get_y())
        self.set_font(FONT, "B" if ticked else "", 10.5)
        self.set_text_color(*(_INK if ticked else _MUTED))
        self.multi_cell(0, 5.2, text, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(0.6)

    def _signature(self, item: PdfItem) -> None:
        if item.signature_png is None:
            unreadable = self._t(N_("Signature image could not be read"))
            self._answer_text(unreadable if item.signature_unreadable else None)
        else:
            # Image size in mm from its pixels, bounded to the signature box.
            from PIL import Image

            with Image.open(io.BytesIO(item.signature_png)) as image:
                px_w, px_h = image.size
            scale = min(_SIGNATURE_MAX_W / px_w, _SIGNATURE_MAX_H / px_h)
            w, h = px_w * scale, px_h * scale
            top = self.get_y()
            self.image(io.BytesIO(item.signature_png), x=self.l_margin, y=top, w=w, h=h)
            self.set_draw_color(*_MUTED)
            self.set_line_width(0.3)
            self.line(self.l_margin, top + h + 1, self.l_margin + _SIGNATURE_MAX_W, top + h + 1)
            self.set_y(top + h + 2.5)
        ev = item.evidence
        if ev is None:
            return
        self.set_font(FONT, "", 8)
        self.set_text_color(*_MUTED)
        unknown = self._t(N_("unknown"))
        lines = [
            self._t(
                N_(
                    "Signed at: {at}    IP: {ip}",
                    at=ev.signed_at or unknown,
                    ip=ev.ip or unknown,
                )
            ),
            self._t(N_("User agent: {agent}", agent=ev.user_agent or unknown)),
            self._t(N_("Form version hash: {hash}", hash=ev.version_hash or unknown)),
        ]
        if ev.answers_hash:
            lines.append(self._t(N_("Answers hash: {hash}", hash=ev.answers_hash)))
        for line in lines:
            self.multi_cell(0, 4, line, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def render_pdf(doc: PdfDocument) -> bytes:
    """A printable A4 PDF of one response (CPU-bound: see `render_job`)."""
    pdf = _ResponsePdf(doc)
    pdf.add_page()
    pdf.title_block()
    if not doc.items:
        pdf.set_font(FONT, "", 11)
        pdf.set_text_color(*_MUTED)
        pdf.multi_cell(0, 6, translate(N_("This response has no answers."), doc.language))
    for item in doc.items:
        pdf.item(item)
    return bytes(pdf.output())


@dataclass(frozen=True, slots=True)
class RenderJob:
    """What a child process needs to print one response (pickled to it, never stored)."""

    organization: str
    title: str
    description: str
    version: int
    response_id: str
    submitted_at: datetime
    fields: list[FieldDef]
    answers: dict[str, Any]
    signatures: dict[str, Any]
    scores: dict[str, Any] = field(default_factory=dict)  # forms/scores.py, as sealed
    # Printed in `language`: the version's `translations` for its texts (forms/
    # translations.py), the catalogue for the PDF's own words.
    language: str = DEFAULT_LANGUAGE
    translations: dict[str, Any] | None = None


def document_of(job: RenderJob) -> PdfDocument:
    """The document model of a render job (what either renderer draws)."""
    shown = localize(
        job.title,
        job.description,
        [field.to_json() for field in job.fields],
        job.translations,
        job.language,
    )
    labels = {str(raw.get("id")): str(raw.get("label")) for raw in shown.fields}
    fields = [
        field.model_copy(update={"label": labels.get(field.id, field.label)})
        for field in job.fields
    ]
    return build_document(
        organization=job.organization,
        title=shown.title,
        description=shown.description,
        version=job.version,
        response_id=job.response_id,
        submitted_at=job.submitted_at,
        fields=fields,
        answers=job.answers,
        signatures=job.signatures,
        scores=job.scores,
        option_labels=shown.option_labels(),
        language=job.language,
    )


def render_job(job: RenderJob) -> bytes:
    """The PDF of one response, document model included (signature PNGs are decoded
    here too): the whole CPU-heavy part, run in a child process."""
    return render_pdf(document_of(job))
