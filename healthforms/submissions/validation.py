"""Answers checked against the published version a patient saw.

Returns only what may be stored: answers of fields that were shown (showWhen holds),
normalised. Hidden fields are neither required nor stored, whatever the client sent
for them. Error messages name the rule, never echo the value (it may be PHI).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import re
from collections.abc import Mapping
from datetime import date
from typing import Any

from PIL import Image, UnidentifiedImageError

from healthforms.errors import ValidationFailed
from healthforms.forms.conditions import Walk
from healthforms.forms.schema import FieldDef, FieldType
from healthforms.forms.validation import (
    DEFAULT_TEXT_MAX,
    DEFAULT_TEXTAREA_MAX,
    UnsafePattern,
    compile_pattern,
)
from healthforms.languages import N_

SIGNATURE_PREFIX = "data:image/png;base64,"
MAX_SIGNATURE_CHARS = 256 * 1024
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_SIGNATURE_PIXELS = 4_000_000
MAX_EMAIL = 254
# One @, no spaces, a dot in the domain: deliverability is the clinic's business.
_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s.]+(\.[^@\s.]+)+$")
_PHONE_RE = re.compile(r"^\+?[0-9 ().-]{7,25}$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NUMBER_RE = re.compile(r"^-?\d{1,15}(\.\d{1,10})?$")
MAX_UNKNOWN_REPORTED = 20
CALCULATED_NOT_ANSWERED = "is calculated by the clinic, not answered"
# The cap on all answers of one response together (HEALTHFORMS_MAX_ANSWERS_BYTES): a
# long intake form plus one 256 KiB signature. Every byte is paid for again when the
# response is printed (~12 s of CPU per MiB of text, pdf/render.py).
DEFAULT_MAX_ANSWERS_BYTES = 512 * 1024


def answers_size(answers: Mapping[str, Any]) -> int:
    """Bytes of the answers as stored: compact UTF-8 JSON."""
    return len(json.dumps(answers, ensure_ascii=False, separators=(",", ":")).encode())


def answers_too_large(limit: int) -> str:
    """The 422 message for answers over the cap (names the limit, never a value)."""
    size = f"{limit // 1024} KiB" if limit >= 1024 else f"{limit} bytes"
    return N_(
        "The answers are too large to send together (at most {size} in all). "
        "Shorten the longest answers and send again.",
        size=size,
    )


Answer = str | int | float | bool | list[str]


def _is_blank(value: object) -> bool:
    if isinstance(value, str):
        return not value.strip()
    return value is None or value == []


def _text(field: FieldDef, value: object, default_max: int) -> str:
    if not isinstance(value, str):
        raise ValueError(N_("must be text"))
    limit = int(field.max) if field.max is not None else default_max
    if len(value) > limit:
        raise ValueError(N_("must be at most {limit} characters", limit=limit))
    if field.min is not None and len(value.strip()) < int(field.min):
        raise ValueError(N_("must be at least {limit} characters", limit=int(field.min)))
    _check_pattern(field, value)
    return value


def _check_pattern(field: FieldDef, value: str) -> None:
    if field.pattern is None:
        return
    try:
        compiled = compile_pattern(field.pattern)
    except UnsafePattern as exc:  # a definition that predates the rule: refuse, never hang
        raise ValueError(N_("cannot be checked")) from exc
    if compiled.fullmatch(value) is None:
        raise ValueError(N_("does not have the expected format"))


def _email(field: FieldDef, value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(N_("must be an email address"))
    value = value.strip()
    if len(value) > MAX_EMAIL or not _EMAIL_RE.match(value):
        raise ValueError(N_("must be an email address"))
    _check_pattern(field, value)
    return value


def _phone(field: FieldDef, value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(N_("must be a phone number"))
    value = value.strip()
    digits = sum(ch.isdigit() for ch in value)
    if not _PHONE_RE.match(value) or not 7 <= digits <= 15:
        raise ValueError(N_("must be a phone number"))
    _check_pattern(field, value)
    return value


def _number(field: FieldDef, value: object) -> int | float:
    number: int | float
    if isinstance(value, bool):
        raise ValueError(N_("must be a number"))
    if isinstance(value, int | float):
        number = value
    elif isinstance(value, str) and _NUMBER_RE.match(value.strip()):
        text = value.strip()
        number = float(text) if "." in text else int(text)
    else:
        raise ValueError(N_("must be a number"))
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueError(N_("must be a number"))
    if abs(number) > 1e15:
        raise ValueError(N_("is out of range"))
    if field.min is not None and number < field.min:
        raise ValueError(N_("must be at least {limit}", limit=f"{field.min:g}"))
    if field.max is not None and number > field.max:
        raise ValueError(N_("must be at most {limit}", limit=f"{field.max:g}"))
    return number


def _date(value: object) -> str:
    if not isinstance(value, str) or not _DATE_RE.match(value):
        raise ValueError(N_("must be a date (yyyy-mm-dd)"))
    try:
        date.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(N_("must be a date (yyyy-mm-dd)")) from exc
    return value


def _choice(field: FieldDef, value: object) -> str:
    if not isinstance(value, str) or value not in (field.options or []):
        raise ValueError(N_("must be one of the options"))
    return value


def _checkbox(field: FieldDef, value: object) -> bool | list[str]:
    if field.options is None:
        if not isinstance(value, bool):
            raise ValueError(N_("must be true or false"))
        return value
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(N_("must be a list of options"))
    allowed = set(field.options)
    if any(item not in allowed for item in value):
        raise ValueError(N_("must only contain the options"))
    if len(set(value)) != len(value):
        raise ValueError(N_("must not repeat an option"))
    # Keep the form's order so equal choices always store (and hash) the same.
    return [option for option in field.options if option in set(value)]


def _signature(value: object) -> str:
    if not isinstance(value, str) or not value.startswith(SIGNATURE_PREFIX):
        raise ValueError(N_("must be a PNG image"))
    if len(value) > MAX_SIGNATURE_CHARS:
        raise ValueError(N_("is too large (at most 256 KiB)"))
    try:
        decoded = base64.b64decode(value[len(SIGNATURE_PREFIX) :], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(N_("must be a PNG image")) from exc
    if not decoded.startswith(PNG_MAGIC):
        raise ValueError(N_("must be a PNG image"))
    # A few KiB of PNG can claim a huge canvas (a decompression bomb for whoever draws
    # it, e.g. the PDF renderer): check the size it declares, then that it decodes.
    try:
        with Image.open(io.BytesIO(decoded), formats=("PNG",)) as image:
            width, height = image.size
            if width * height > MAX_SIGNATURE_PIXELS:
                raise ValueError(N_("is too large (at most 4 megapixels)"))
            image.load()
    except (
        UnidentifiedImageError,
        OSError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        raise ValueError(N_("must be a PNG image")) from exc
    return value


def _validate_one(field: FieldDef, value: object) -> Answer:
    kind = field.type
    if kind is FieldType.TEXT:
        return _text(field, value, DEFAULT_TEXT_MAX)
    if kind is FieldType.TEXTAREA:
        return _text(field, value, DEFAULT_TEXTAREA_MAX)
    if kind is FieldType.EMAIL:
        return _email(field, value)
    if kind is FieldType.PHONE:
        return _phone(field, value)
    if kind is FieldType.NUMBER:
        return _number(field, value)
    if kind is FieldType.DATE:
        return _date(value)
    if kind in (FieldType.SELECT, FieldType.RADIO):
        return _choice(field, value)
    if kind is FieldType.CHECKBOX:
        return _checkbox(field, value)
    if kind is FieldType.SIGNATURE:
        return _signature(value)
    raise ValueError("unsupported field type")  # pragma: no cover - FieldType is closed


def validate_answers(
    fields: list[FieldDef], raw: object, *, max_bytes: int = DEFAULT_MAX_ANSWERS_BYTES
) -> dict[str, Any]:
    """The answers to store, or ValidationFailed keyed by field id.

    One pass in form order: a field's condition (and its page's) is evaluated on the
    already normalised answers of the visible fields before it, exactly as the stored
    answers will be evaluated again when they are shown (forms/conditions.py).
    Answers that pass one by one may still be refused together: over `max_bytes`
    as stored, `fields` carries the key "answers" (a patient sees the message).
    """
    if not isinstance(raw, dict):
        raise ValidationFailed({"answers": N_("answers must be an object")})
    known = {field.id for field in fields if field.takes_answer}
    errors: dict[str, str] = {}
    for key in raw:
        if key not in known and len(errors) < MAX_UNKNOWN_REPORTED:
            errors[str(key)[:64]] = N_("unknown field")
    cleaned: dict[str, Any] = {}
    walk = Walk()
    for field in fields:
        if field.type is FieldType.SCORE:
            # The server calculates scores (forms/scores.py): a sent value is refused.
            if field.id in raw:
                errors[field.id] = CALCULATED_NOT_ANSWERED
            continue
        if not walk.shows(field, cleaned) or not field.takes_answer:
            continue  # hidden: neither required nor stored; a block has no answer
        value = raw.get(field.id)
        consent_unticked = (
            field.type is FieldType.CHECKBOX and field.options is None and value is False
        )
        if _is_blank(value) or consent_unticked:
            if field.required:
                errors[field.id] = N_("is required")
            elif consent_unticked:
                cleaned[field.id] = False
            continue
        try:
            cleaned[field.id] = _validate_one(field, value)
        except ValueError as exc:
            # The Message itself (not str()): the answer translates it (languages.py).
            message = exc.args[0] if exc.args else ""
            errors[field.id] = message if isinstance(message, str) else str(exc)
    if answers_size(cleaned) > max_bytes:
        errors["answers"] = answers_too_large(max_bytes)
    if errors:
        raise ValidationFailed(errors)
    return cleaned
