"""A patient form posted as plain HTML (no JavaScript): its fields as the typed answers
the JSON API takes, so both go through the same SubmissionService.submit.

The mapping reads only the controls of the form's own fields, typed as the page's
script types them (static/js/fields.js `fieldValue`): text trimmed (a textarea kept as
typed, its line breaks as the browser's script sees them), numbers as numbers, the
consent box as true/false, a multiple choice as a list, a signature as the PNG data URL
the contract requires. A value that cannot be typed is passed on as the text it is, so
the validator refuses it in its own words. Nothing here decides what is valid.

A signature without JavaScript: the pad cannot draw, so the patient types their name
in the pad's "type your full name" box and the name is drawn here, with Pillow in the
bundled DejaVu font, into the same kind of PNG the pad makes.
"""

from __future__ import annotations

import base64
import io
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from healthforms.forms.schema import FieldDef, FieldType
from healthforms.submissions.validation import SIGNATURE_PREFIX

# Names the page's controls use beside the field ids; a field id starts with a letter
# and has no ":" (forms/schema.py FIELD_ID_PATTERN), so neither can collide with one.
NONCE_FIELD = "_nonce"
TYPED_SUFFIX = ":typed"

# The pad's canvas (templates/_fields.html): the same size, colours and margins.
SIGNATURE_SIZE = (600, 200)
_INK = (11, 37, 48)
_MARGIN = 20
# Longer than any name: the image must stay far below the validator's 256 KiB.
MAX_TYPED_NAME = 120
# The font ships inside the package for the PDFs (pdf/render.py, fonts/LICENSE).
FONT_PATH = Path(__file__).resolve().parent.parent / "pdf" / "fonts" / "DejaVuSans.ttf"

# An HTML "valid floating-point number" (what <input type=number> submits).
_HTML_NUMBER_RE = re.compile(r"^-?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$")
_MAX_NUMBER_TEXT = 64
_SAFE_INTEGER = 2**53


@dataclass(frozen=True, slots=True)
class PostedForm:
    """What a posted patient form carries: its nonce and answers as the API takes them."""

    nonce: str | None
    answers: dict[str, Any]

    def body(self) -> dict[str, Any]:
        """The JSON API's submission body (API.md "Public forms")."""
        return {"nonce": self.nonce, "answers": self.answers}


def max_form_fields(fields: list[FieldDef]) -> int:
    """How many name=value pairs the form's own controls can send (a bound for the parser)."""
    return 8 + sum(
        2 + len(f.options or []) + (f.file_count_limit if f.type is FieldType.FILE else 0)
        for f in fields
    )


def posted_answers(
    fields: list[FieldDef],
    get_one: Callable[[str], str | None],
    get_all: Callable[[str], list[str]],
) -> PostedForm:
    """The nonce and typed answers of a posted form, read through `get_one` (the first
    value of a name, or None) and `get_all` (every value of a name)."""
    answers: dict[str, Any] = {}
    for field in fields:
        value = _answer(field, get_one, get_all)
        if value is not None:
            answers[field.id] = value
    return PostedForm(get_one(NONCE_FIELD), answers)


def _answer(
    field: FieldDef,
    get_one: Callable[[str], str | None],
    get_all: Callable[[str], list[str]],
) -> Any:
    kind = field.type
    if kind is FieldType.FILE:
        # Files the page kept from an earlier POST (their upload ids, ticked "keep");
        # new files come as file parts, uploaded before the submission (patient_page.py).
        return [value for value in get_all(field.id) if value] or None
    if kind is FieldType.CHECKBOX:
        if field.options is None:
            raw = get_one(field.id)
            # An unticked box sends nothing: false, as the page's script sends it.
            return False if raw is None else (True if raw == "true" else raw)
        chosen = get_all(field.id)
        return chosen or None
    if kind is FieldType.SIGNATURE:
        drawn = get_one(field.id) or ""
        if drawn:
            return drawn
        typed = (get_one(field.id + TYPED_SUFFIX) or "").strip()
        return typed_signature(typed[:MAX_TYPED_NAME]) if typed else None
    raw = get_one(field.id)
    if raw is None:
        return None
    if kind is FieldType.RADIO:
        return raw or None  # the chosen option, exactly
    # Browsers send line breaks as CRLF; the page's script reads them as LF.
    text = raw.replace("\r\n", "\n")
    if kind is FieldType.TEXTAREA:
        return text or None
    text = text.strip()
    if not text:
        return None
    if kind is FieldType.NUMBER:
        return _number(text)
    return text


def _number(text: str) -> int | float | str:
    """The number the page's script would send (JavaScript's Number), or the text."""
    if len(text) > _MAX_NUMBER_TEXT or not _HTML_NUMBER_RE.match(text):
        return text
    number = float(text)
    if not math.isfinite(number):
        return text
    if number.is_integer() and abs(number) < _SAFE_INTEGER:
        return int(number)
    return number


@cache
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONT_PATH), size)


def typed_signature(name: str) -> str:
    """A typed name drawn as a signature: a PNG data URL like the pad's."""
    name = " ".join(name.split())
    width, height = SIGNATURE_SIZE
    image = Image.new("RGB", SIGNATURE_SIZE, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    size = 56
    while size > 16 and draw.textlength(name, font=_font(size)) > width - 2 * _MARGIN:
        size -= 4
    draw.text((_MARGIN, height / 2), name, font=_font(size), fill=_INK, anchor="lm")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return SIGNATURE_PREFIX + base64.b64encode(buffer.getvalue()).decode("ascii")
