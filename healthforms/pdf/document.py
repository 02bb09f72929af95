"""What a response's PDF shows, built once and drawn by either renderer.

The document is made from the response's OWN form version (its labels and options)
and only the fields that were shown to the patient (`showWhen`): a hidden field is
neither on the PDF nor stored. Both renderers (fpdf2 in render.py, Gotenberg in
gotenberg.py) draw this same model, so they cannot disagree about what is on it.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from PIL import Image, UnidentifiedImageError

from healthforms.forms.conditions import visible_fields
from healthforms.forms.schema import FieldDef, FieldType
from healthforms.forms.scores import score_text
from healthforms.languages import N_, translate
from healthforms.submissions.validation import MAX_SIGNATURE_PIXELS

# Signatures are at most 256 KiB of PNG (API.md); larger or huge-canvas images are
# not decoded at all (a decompression bomb must not take the renderer down).
MAX_SIGNATURE_BYTES = 512 * 1024
_DATA_URL_PREFIX = "data:image/png;base64,"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# C0 controls except tab and newline, DEL and C1 controls: never drawn.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
NOT_ANSWERED = N_("Not answered")


@dataclass(frozen=True, slots=True)
class SignatureEvidence:
    signed_at: str | None
    ip: str | None
    user_agent: str | None
    version_hash: str | None
    answers_hash: str | None


@dataclass(frozen=True, slots=True)
class PdfFile:
    """A file a patient attached (uploads/): images were re-encoded when they arrived,
    PDFs checked; `data` None when it could not be decrypted."""

    media_type: str
    data: bytes | None
    pages: int | None = None

    @property
    def is_pdf(self) -> bool:
        return self.media_type == "application/pdf"


def files_text(files: tuple[PdfFile, ...], language: str = "en") -> str | None:
    """What a file answer holds, in words, in `language` (the renderers draw the files
    themselves)."""
    photos = sum(not f.is_pdf for f in files)
    pdfs = [f for f in files if f.is_pdf]
    parts = []
    if photos:
        parts.append(N_("1 photo") if photos == 1 else N_("{count} photos", count=photos))
    for document in pdfs:
        pages = document.pages or 0
        parts.append(
            N_("PDF document (1 page)")
            if pages == 1
            else N_("PDF document ({pages} pages)", pages=pages)
        )
    return ", ".join(translate(part, language) for part in parts) if parts else None


@dataclass(frozen=True, slots=True)
class PdfItem:
    """One question and its answer, ready to draw."""

    field_id: str
    label: str
    kind: FieldType
    # Plain answers (text, numbers, dates, choices): the text to print, None if blank.
    text: str | None = None
    # Checkbox lists: every option with whether it was ticked.
    choices: tuple[tuple[str, bool], ...] = ()
    # Consent boxes (checkbox without options): ticked or not.
    checked: bool | None = None
    # Signatures: the image, flattened onto white and re-encoded (never the raw upload).
    signature_png: bytes | None = None
    signature_unreadable: bool = False
    evidence: SignatureEvidence | None = None
    # File answers: the attached files, in the answer's order.
    files: tuple[PdfFile, ...] = ()


@dataclass(frozen=True, slots=True)
class PdfDocument:
    organization: str
    title: str
    description: str
    version: int
    response_id: str
    submitted_at: datetime
    items: tuple[PdfItem, ...]
    confirmation: str = ""  # the code the patient was shown
    form_id: str = ""
    # The organisation's logo (branding/): PNG or JPEG, re-encoded at upload.
    logo: bytes | None = None
    # The language its labels, options and fixed texts are printed in (languages.py).
    language: str = "en"

    @property
    def submitted_text(self) -> str:
        return self.submitted_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def clean_text(value: str) -> str:
    """Printable text: control characters dropped, tabs as spaces, newlines kept."""
    text = value.replace("\r\n", "\n").replace("\r", "\n").replace("\t", "    ")
    return _CONTROL_CHARS.sub("", text)


def format_answer(value: Any) -> str | None:
    """The printed form of a plain answer; None when the patient left it blank."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "Yes" if value else "No"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, list):
        parts = [p for p in (format_answer(v) for v in value) if p]
        return ", ".join(parts) if parts else None
    text = clean_text(str(value))
    return text if text.strip() else None


def shown_field_ids(fields: list[FieldDef], answers: dict[str, Any]) -> set[str]:
    """Ids of the fields and blocks the patient saw (forms/conditions.py).

    A stored answer proves its field was shown when it was submitted, whatever a
    later reading of the conditions says.
    """
    shown = {f.id for f in visible_fields(fields, answers)}
    return shown | {f.id for f in fields if f.takes_answer and f.id in answers}


def decode_signature(value: Any) -> bytes | None:
    """A signature data URL as a clean RGB PNG on white; None when it cannot be read."""
    if not isinstance(value, str) or not value.startswith(_DATA_URL_PREFIX):
        return None
    payload = value[len(_DATA_URL_PREFIX) :]
    if len(payload) > MAX_SIGNATURE_BYTES * 4 // 3 + 4:
        return None
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return None
    if not raw.startswith(_PNG_MAGIC):
        return None
    try:
        with Image.open(io.BytesIO(raw)) as probe:
            width, height = probe.size
            if width < 1 or height < 1 or width * height > MAX_SIGNATURE_PIXELS:
                return None
            probe.load()
            rgba = probe.convert("RGBA")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None
    # Flatten onto white: a transparent canvas must print as ink on paper.
    flat = Image.new("RGB", rgba.size, (255, 255, 255))
    flat.paste(rgba, mask=rgba.getchannel("A"))
    out = io.BytesIO()
    flat.save(out, format="PNG", optimize=False)
    return out.getvalue()


def _evidence(raw: Any) -> SignatureEvidence | None:
    if not isinstance(raw, dict):
        return None

    def text(key: str) -> str | None:
        value = raw.get(key)
        return clean_text(str(value))[:512] if value not in (None, "") else None

    return SignatureEvidence(
        signed_at=text("signedAt"),
        ip=text("ip"),
        user_agent=text("userAgent"),
        version_hash=text("versionHash"),
        answers_hash=text("answersHash"),
    )


def build_item(
    field: FieldDef,
    answer: Any,
    signatures: dict[str, Any],
    option_labels: Mapping[str, str] | None = None,
    files: Mapping[str, PdfFile] | None = None,
    language: str = "en",
) -> PdfItem:
    """One question; `option_labels` prints canonical options in another language;
    `files`: the response's attached files by upload id (uploads/)."""
    labels = option_labels or {}
    label = clean_text(field.label)
    if not field.takes_answer:
        # Headings and page titles print as section titles; a paragraph prints its text
        # (the consent wording the patient signed under belongs on the record).
        return PdfItem(field_id=field.id, label=label, kind=field.type)
    if field.type is FieldType.FILE:
        ids = answer if isinstance(answer, list) else []
        attached = tuple((files or {})[i] for i in ids if isinstance(i, str) and i in (files or {}))
        return PdfItem(
            field_id=field.id,
            label=label,
            kind=field.type,
            text=files_text(attached, language),
            files=attached,
        )
    if field.type is FieldType.SIGNATURE:
        png = decode_signature(answer)
        return PdfItem(
            field_id=field.id,
            label=label,
            kind=field.type,
            signature_png=png,
            signature_unreadable=png is None and answer not in (None, ""),
            evidence=_evidence(signatures.get(field.id)),
        )
    if field.type is FieldType.CHECKBOX and field.options:
        raw = answer if isinstance(answer, list) else ([] if answer is None else [answer])
        chosen = [str(c) for c in raw if isinstance(c, str | int | float)]
        choices = [(clean_text(labels.get(opt, opt)), opt in chosen) for opt in field.options]
        # An answer outside the version's options is still shown, never dropped.
        known = set(field.options)
        choices += [(clean_text(c), True) for c in chosen if c not in known]
        return PdfItem(field_id=field.id, label=label, kind=field.type, choices=tuple(choices))
    if field.type is FieldType.CHECKBOX:
        checked = answer if isinstance(answer, bool) else None
        return PdfItem(field_id=field.id, label=label, kind=field.type, checked=checked)
    if isinstance(answer, str) and answer in labels:
        answer = labels[answer]
    return PdfItem(field_id=field.id, label=label, kind=field.type, text=format_answer(answer))


def build_document(
    *,
    organization: str,
    title: str,
    description: str,
    version: int,
    response_id: str,
    submitted_at: datetime,
    fields: list[FieldDef],
    answers: dict[str, Any],
    signatures: dict[str, Any],
    confirmation: str = "",
    form_id: str = "",
    logo: bytes | None = None,
    scores: dict[str, Any] | None = None,
    option_labels: Mapping[str, Mapping[str, str]] | None = None,
    language: str = "en",
    files: Mapping[str, PdfFile] | None = None,
) -> PdfDocument:
    """The PDF model of one response: its version's fields, in order, shown ones only
    (labels as given; `option_labels`: field id -> option -> its printed label; `files`:
    the response's attached files by upload id, uploads/); a score field shows the score
    sealed with the response (value and band)."""
    shown = shown_field_ids(fields, answers)
    labels = option_labels or {}
    items = tuple(
        PdfItem(
            f.id, clean_text(f.label), f.type, text=score_text((scores or {}).get(f.id), language)
        )
        if f.type is FieldType.SCORE
        else build_item(f, answers.get(f.id), signatures, labels.get(f.id), files, language)
        for f in fields
        if f.id in shown
    )
    return PdfDocument(
        organization=clean_text(organization),
        title=clean_text(title),
        description=clean_text(description or ""),
        version=version,
        response_id=response_id,
        submitted_at=submitted_at,
        items=items,
        confirmation=clean_text(confirmation),
        form_id=clean_text(form_id),
        logo=logo,
        language=language,
    )
