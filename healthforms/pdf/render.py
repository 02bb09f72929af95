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
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime
from pathlib import Path
from typing import Any

from fpdf import FPDF
from fpdf.enums import MethodReturnValue, XPos, YPos
from PIL import Image, UnidentifiedImageError
from pypdf import PdfReader, PdfWriter
from pypdf.errors import PyPdfError

from healthforms.forms.schema import LAYOUT_TYPES, FieldDef, FieldType
from healthforms.forms.translations import localize
from healthforms.images import DEFAULT_MAX_PIXELS
from healthforms.languages import DEFAULT_LANGUAGE, N_, Message, translate
from healthforms.pdf.document import (
    NOT_ANSWERED,
    PdfDocument,
    PdfFile,
    PdfItem,
    build_document,
)

FONT_DIR = Path(__file__).parent / "fonts"
FONT = "DejaVu"

_MARGIN = 18.0
_INK = (20, 24, 31)
_MUTED = (95, 104, 118)
_RULE = (210, 214, 220)
_SIGNATURE_MAX_W = 80.0
_SIGNATURE_MAX_H = 30.0
_LOGO_MAX_W = 40.0
_LOGO_MAX_H = 16.0
# Identifiers shrink to fit their line down to this size, then wrap: never cut off.
_SMALLEST = 6.0
# An answer longer than this is not measured for keeping it with a signature: it cannot
# share one page with it anyway, and measuring costs as much as drawing.
_MEASURE_MAX_CHARS = 6000


def image_size(data: bytes, max_w: float, max_h: float) -> tuple[float, float]:
    """An image's size in mm from its pixels, scaled to fit max_w x max_h."""
    with Image.open(io.BytesIO(data)) as image:
        px_w, px_h = image.size
    scale = min(max_w / px_w, max_h / px_h)
    return px_w * scale, px_h * scale


# An attached photo is scaled to the text width and at most this tall.
_FILE_IMAGE_MAX_H = 120.0


class _ResponsePdf(FPDF):
    """A4 page with a running header (after page 1) and a "Page n of N" footer."""

    def __init__(self, doc: PdfDocument) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.doc = doc
        self._body_top: float | None = None
        self.set_margins(_MARGIN, _MARGIN, _MARGIN)
        self.set_auto_page_break(auto=True, margin=20)
        self.add_font(FONT, "", str(FONT_DIR / "DejaVuSans.ttf"))
        self.add_font(FONT, "B", str(FONT_DIR / "DejaVuSans-Bold.ttf"))
        # Metadata carries the form, never an answer (a PDF index must not leak PHI).
        self.set_title(doc.title)
        self.set_creator("healthforms")
        self.set_author(doc.organization)

    @property
    def _width(self) -> float:
        return self.w - 2 * _MARGIN

    def _fitting_size(
        self, text: str, style: str, size: float, width: float, smallest: float = _SMALLEST
    ) -> float:
        """The largest size up to `size` at which `text` fits a cell `width` wide on one
        line, but not below `smallest` (the caller's multi_cell wraps what still does
        not fit)."""
        self.set_font(FONT, style, size)
        text_w = self.get_string_width(text)
        room = width - 2 * self.c_margin - 0.01
        if text_w <= room:
            return size
        return max(smallest, math.floor(10 * size * room / text_w) / 10)

    def _running_header(self) -> tuple[str, float]:
        doc = self.doc
        text = self._t(N_("{title}  ·  Response {id}", title=doc.title, id=doc.response_id))
        if doc.confirmation:
            text += "  ·  " + self._t(N_("Confirmation {code}", code=doc.confirmation))
        return text, self._fitting_size(text, "", 8, self._width, smallest=7)

    def body_top(self) -> float:
        """Where the items start on a page after the first (below the running header)."""
        if self._body_top is not None:
            return self._body_top
        text, size = self._running_header()
        self._body_top = self.t_margin + self._text_height(text, self._width, 4.5, "", size) + 3
        return self._body_top

    def _t(self, message: Message) -> str:
        """A fixed text of the PDF in the document's language."""
        return translate(message, self.doc.language)

    def header(self) -> None:
        if self.page_no() == 1:
            return
        text, size = self._running_header()
        self.set_font(FONT, "", size)
        self.set_text_color(*_MUTED)
        self.multi_cell(self._width, 4.5, text, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self._rule()
        self.ln(3)

    def footer(self) -> None:
        self.set_y(-15)
        text = self._t(
            N_(
                "{clinic}  ·  version {version}",
                clinic=self.doc.organization,
                version=self.doc.version,
            )
        )
        left = self._width - 32
        self.set_font(FONT, "", self._fitting_size(text, "", 8, left))
        self.set_text_color(*_MUTED)
        self.multi_cell(left, 3.5, text, align="L", new_x=XPos.RIGHT, new_y=YPos.TOP)
        self.set_font(FONT, "", 8)
        page = self._t(N_("Page {page} of {pages}", page=self.page_no(), pages="{nb}"))
        self.cell(32, 3.5, page, align="R")

    def _rule(self) -> None:
        self.set_draw_color(*_RULE)
        self.set_line_width(0.2)
        self.line(_MARGIN, self.get_y(), self.w - _MARGIN, self.get_y())

    # Page 1 -------------------------------------------------------------------------------

    def title_block(self) -> None:
        doc = self.doc
        top = self.get_y()
        text_x, logo_h = _MARGIN, 0.0
        if doc.logo is not None:
            logo_w, logo_h = image_size(doc.logo, _LOGO_MAX_W, _LOGO_MAX_H)
            self.image(io.BytesIO(doc.logo), x=_MARGIN, y=top, w=logo_w, h=logo_h)
            text_x = _MARGIN + logo_w + 4
        self.set_font(FONT, "B" if doc.logo is not None else "", 10 if doc.logo else 9)
        self.set_text_color(*(_INK if doc.logo is not None else _MUTED))
        self.set_xy(text_x, top + (max(0.0, logo_h / 2 - 2.5) if doc.logo else 0.0))
        self.multi_cell(
            self.w - _MARGIN - text_x, 5, doc.organization, new_x=XPos.LMARGIN, new_y=YPos.NEXT
        )
        self.set_y(max(self.get_y(), top + logo_h + 2))
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
        self._facts()

    def _facts(self) -> None:
        """The grey box of identifiers, two to a row, or one to a row when a value does
        not fit half the width; a value shrinks to fit, then wraps: a long id, code or
        title is never cut off."""
        doc = self.doc
        if doc.form_id:
            form = self._t(
                N_("{form_id}, version {version}", form_id=doc.form_id, version=doc.version)
            )
        else:
            form = self._t(N_("version {version}", version=doc.version))
        pairs = [(self._t(N_("Response")), doc.response_id)]
        if doc.confirmation:
            pairs.append((self._t(N_("Confirmation")), doc.confirmation))
        pairs += [(self._t(N_("Submitted")), doc.submitted_text), (self._t(N_("Form")), form)]
        half = self._width / 2
        rows: list[list[tuple[str, str]]] = []
        for name, value in pairs:
            last = rows[-1] if rows else []
            if self._is_half(value) and len(last) == 1 and self._is_half(last[0][1]):
                rows[-1].append((name, value))
            else:
                rows.append([(name, value)])
        top = self.get_y()
        drawn: list[tuple[float, list[tuple[str, str, float, float]]]] = []
        for row in rows:
            column = half if len(row) == 2 or self._is_half(row[0][1]) else self._width
            cells = []
            for name, value in row:
                size = self._fitting_size(value, "B", 9, column - 6)
                cells.append((name, value, size, column))
            value_h = max(self._text_height(v, c - 6, 4.5, "B", z) for _, v, z, c in cells)
            drawn.append((4.5 + value_h + 1.5, cells))
        box_h = sum(height for height, _ in drawn) + 3
        self.set_fill_color(244, 246, 249)
        self.rect(_MARGIN, top, self._width, box_h, style="F")
        y = top + 2
        for height, cells in drawn:
            for index, (name, value, size, column) in enumerate(cells):
                x = _MARGIN + index * column + 3
                self.set_xy(x, y)
                self.set_font(FONT, "", 7.5)
                self.set_text_color(*_MUTED)
                self.cell(column - 6, 4, name.upper())
                self.set_xy(x, y + 4.5)
                self.set_font(FONT, "B", size)
                self.set_text_color(*_INK)
                self.multi_cell(column - 6, 4.5, value, align="L")
            y += height
        self.set_xy(_MARGIN, top + box_h + 6)

    def _is_half(self, value: str) -> bool:
        return self._fitting_size(value, "B", 9, self._width / 2 - 6) >= 7.5

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
        elif item.kind is FieldType.FILE and any(not f.is_pdf for f in item.files):
            height += 40  # the label stays with (the top of) its first photo
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

    def _text_height(self, text: str, width: float, line: float, style: str, size: float) -> float:
        """The height multi_cell(width, line, text) takes in this font, drawing nothing."""
        self.set_font(FONT, style, size)
        height = self.multi_cell(width, line, text, dry_run=True, output=MethodReturnValue.HEIGHT)
        assert isinstance(height, float | int)  # noqa: S101 - HEIGHT alone returns a number
        return float(height)

    def height(self, item: PdfItem) -> float:
        """The exact height `item` draws, separator included (as `item` draws it);
        math.inf for answers too long to be worth measuring."""
        width = self._width
        if item.kind is FieldType.PARAGRAPH:
            return self._text_height(item.label, width, 4.8, "", 9.5) + 4
        if item.kind in LAYOUT_TYPES:
            return 2 + self._text_height(item.label, width, 7, "B", 13) + 3
        total = self._text_height(item.label, width, 5, "B", 10) + 1.5
        if item.kind is FieldType.SIGNATURE:
            if item.signature_png is not None:
                total += image_size(item.signature_png, _SIGNATURE_MAX_W, _SIGNATURE_MAX_H)[1]
                total += 2.5
            else:
                total += self._text_height(self._t(NOT_ANSWERED), width, 5.5, "", 11)
            for line in self._evidence_lines(item):
                total += self._text_height(line, width, 4, "", 8)
        elif item.choices:
            for option, ticked in item.choices:
                total += self._text_height(option, width - 6.1, 5.2, "B" if ticked else "", 10.5)
                total += 0.6
        elif item.checked is not None:
            total += 5.2 + 0.6
        else:
            text = item.text or self._t(NOT_ANSWERED)
            if len(text) > _MEASURE_MAX_CHARS:
                return math.inf
            total += self._text_height(text, width, 5.5, "", 11)
        return total + 3 + 4

    def _breaks_before(self, item: PdfItem, following: PdfItem | None) -> bool:
        """Whether `item` starts on a new page.

        A signature block (label, image, date and evidence lines) is drawn in one piece,
        and takes the question before it along rather than open a page alone: a
        signature that could be read as signing a different page's text proves less.
        """
        room = self.page_break_trigger - self.get_y()
        fresh = self.page_break_trigger - self.body_top()
        at_top = self.page_no() > 1 and self.get_y() <= self.body_top() + 0.01
        if at_top:
            return False
        if item.kind is FieldType.SIGNATURE:
            return self.height(item) > room
        if following is not None and following.kind is FieldType.SIGNATURE:
            together = self.height(item) + self.height(following)
            if room < together <= fresh:
                return True
        if item.kind in LAYOUT_TYPES:
            return False  # block() keeps a title with what follows it
        return self._estimate(item) > room and self.get_y() > 40

    def item(self, item: PdfItem, following: PdfItem | None = None) -> None:
        if self._breaks_before(item, following):
            self.add_page()
        if item.kind in LAYOUT_TYPES:
            self.block(item)
            return
        self.set_font(FONT, "B", 10)
        self.set_text_color(*_INK)
        self.multi_cell(0, 5, item.label, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(1.5)
        if item.kind is FieldType.SIGNATURE:
            self._signature(item)
        elif item.kind is FieldType.FILE:
            self._files(item)
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

    def _files(self, item: PdfItem) -> None:
        """Photos drawn scaled to fit; PDF documents listed (their pages are appended)."""
        if not item.files:
            self._answer_text(None)
            return
        width = self.w - self.l_margin - self.r_margin
        for file in item.files:
            if file.is_pdf:
                pages = file.pages or 0
                if file.data:
                    line = (
                        N_("PDF document, 1 page (appended at the end)")
                        if pages == 1
                        else N_("PDF document, {pages} pages (appended at the end)", pages=pages)
                    )
                else:
                    line = (
                        N_("PDF document, 1 page (could not be read)")
                        if pages == 1
                        else N_("PDF document, {pages} pages (could not be read)", pages=pages)
                    )
                self._answer_text(self._t(line))
                continue
            size = photo_pixels(file.data) if file.data else None
            if size is None or file.data is None:
                self._answer_text(self._t(N_("Photo could not be read")))
                continue
            scale = min(width / size[0], _FILE_IMAGE_MAX_H / size[1])
            w, h = size[0] * scale, size[1] * scale
            if self.get_y() + h > self.page_break_trigger:
                self.add_page()
            top = self.get_y()
            self.image(io.BytesIO(file.data), x=self.l_margin, y=top, w=w, h=h)
            self.set_y(top + h + 2)

    def _evidence_lines(self, item: PdfItem) -> list[str]:
        ev = item.evidence
        if ev is None:
            return []
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
        return lines

    def _signature(self, item: PdfItem) -> None:
        if item.signature_png is None:
            unreadable = self._t(N_("Signature image could not be read"))
            self._answer_text(unreadable if item.signature_unreadable else None)
        else:
            # Image size in mm from its pixels, bounded to the signature box.
            w, h = image_size(item.signature_png, _SIGNATURE_MAX_W, _SIGNATURE_MAX_H)
            if self.get_y() + h + 2.5 > self.page_break_trigger:
                # Only when the label alone filled the page: never draw into the footer.
                self.add_page()
            top = self.get_y()
            self.image(io.BytesIO(item.signature_png), x=self.l_margin, y=top, w=w, h=h)
            self.set_draw_color(*_MUTED)
            self.set_line_width(0.3)
            self.line(self.l_margin, top + h + 1, self.l_margin + _SIGNATURE_MAX_W, top + h + 1)
            self.set_y(top + h + 2.5)
        self.set_font(FONT, "", 8)
        self.set_text_color(*_MUTED)
        for line in self._evidence_lines(item):
            self.multi_cell(0, 4, line, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def photo_pixels(data: bytes) -> tuple[int, int] | None:
    """An attached photo's size in pixels, within the pixel budget; None if unreadable."""
    try:
        with Image.open(io.BytesIO(data), formats=("JPEG", "PNG")) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None
    if width < 1 or height < 1 or width * height > DEFAULT_MAX_PIXELS:
        return None
    return width, height


def append_documents(rendered: bytes, doc: PdfDocument) -> bytes:
    """The rendered response followed by the pages of the PDF documents attached to it
    (each was parsed and page-counted when it arrived; one that fails now is left out,
    its line on the answers page says it was attached)."""
    attached = [f.data for item in doc.items for f in item.files if f.is_pdf and f.data]
    if not attached:
        return rendered
    writer = PdfWriter()
    writer.append(PdfReader(io.BytesIO(rendered)))
    for data in attached:
        try:
            writer.append(PdfReader(io.BytesIO(data), strict=False))
        except (PyPdfError, OSError, ValueError, KeyError, TypeError, RecursionError):
            continue
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def render_pdf(doc: PdfDocument) -> bytes:
    """A printable A4 PDF of one response (CPU-bound: see `render_job`)."""
    pdf = _ResponsePdf(doc)
    pdf.add_page()
    pdf.title_block()
    if not doc.items:
        pdf.set_font(FONT, "", 11)
        pdf.set_text_color(*_MUTED)
        pdf.multi_cell(0, 6, translate(N_("This response has no answers."), doc.language))
    for index, item in enumerate(doc.items):
        following = doc.items[index + 1] if index + 1 < len(doc.items) else None
        pdf.item(item, following)
    return append_documents(bytes(pdf.output()), doc)


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
    confirmation: str = ""
    form_id: str = ""
    logo: bytes | None = None
    scores: dict[str, Any] = dataclass_field(default_factory=dict)  # forms/scores.py, sealed
    # Printed in `language`: the version's `translations` for its texts (forms/
    # translations.py), the catalogue for the PDF's own words.
    language: str = DEFAULT_LANGUAGE
    translations: dict[str, Any] | None = None
    # The attached files by upload id (uploads/), decrypted for this render only.
    files: Mapping[str, PdfFile] = dataclass_field(default_factory=dict)


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
        confirmation=job.confirmation,
        form_id=job.form_id,
        logo=job.logo,
        scores=job.scores,
        option_labels=shown.option_labels(),
        language=job.language,
        files=job.files,
    )


def render_job(job: RenderJob) -> bytes:
    """The PDF of one response, document model included (signature PNGs are decoded
    here too): the whole CPU-heavy part, run in a child process."""
    return render_pdf(document_of(job))
