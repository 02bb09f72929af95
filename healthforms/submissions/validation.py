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
from healthforms.languages import DEFAULT_LANGUAGE, N_, translate

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
# An upload's id as uploads/ issues it (docs/uploads.md): the answer of a file field is
# a list of these; whose they are is checked when the response is stored.
UPLOAD_ID_RE = re.compile(r"^upl_[A-Za-z0-9_-]{8,36}$")
_PHONE_DIGITS = (7, 15)
NUMBER_LIMIT = 1e15

# The server's words. client_rules() hands the same messages to the patient page's
# checks (static/js/fields.js), so the browser refuses what this module refuses, in the
# same words; a message never echoes the value (it may be PHI).
REQUIRED = N_("is required")
NOT_A_NUMBER = N_("must be a number")
OUT_OF_RANGE = N_("is out of range")
BAD_FORMAT = N_("does not have the expected format")
NOT_AN_EMAIL = N_("must be an email address")
NOT_A_PHONE = N_("must be a phone number")
NOT_A_DATE = N_("must be a date (yyyy-mm-dd)")
NOT_AN_OPTION = N_("must be one of the options")
SIGNATURE_TOO_LARGE = N_("is too large (at most 256 KiB)")


def too_long(limit: int) -> str:
    return N_("must be at most {limit} characters", limit=limit)


def too_short(limit: int) -> str:
    return N_("must be at least {limit} characters", limit=limit)


def _bound_text(bound: float) -> str:
    """A bound as people write it: 1234567, not 1.23457e+06 (which `:g` gives)."""
    if bound.is_integer() and abs(bound) < NUMBER_LIMIT:
        return str(int(bound))
    return f"{bound:.15g}"


def below_min(bound: float) -> str:
    return N_("must be at least {limit}", limit=_bound_text(bound))


def above_max(bound: float) -> str:
    return N_("must be at most {limit}", limit=_bound_text(bound))


CALCULATED_NOT_ANSWERED = N_("is calculated by the clinic, not answered")
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
        raise ValueError(too_long(limit))
    if field.min is not None and len(value.strip()) < int(field.min):
        raise ValueError(too_short(int(field.min)))
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
        raise ValueError(BAD_FORMAT)


def _email(field: FieldDef, value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(NOT_AN_EMAIL)
    value = value.strip()
    if len(value) > MAX_EMAIL or not _EMAIL_RE.match(value):
        raise ValueError(NOT_AN_EMAIL)
    _check_pattern(field, value)
    return value


def _phone(field: FieldDef, value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(NOT_A_PHONE)
    value = value.strip()
    digits = sum(ch.isdigit() for ch in value)
    if not _PHONE_RE.match(value) or not _PHONE_DIGITS[0] <= digits <= _PHONE_DIGITS[1]:
        raise ValueError(NOT_A_PHONE)
    _check_pattern(field, value)
    return value


def _number(field: FieldDef, value: object) -> int | float:
    number: int | float
    if isinstance(value, bool):
        raise ValueError(NOT_A_NUMBER)
    if isinstance(value, int | float):
        number = value
    elif isinstance(value, str) and _NUMBER_RE.match(value.strip()):
        text = value.strip()
        number = float(text) if "." in text else int(text)
    else:
        raise ValueError(NOT_A_NUMBER)
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueError(NOT_A_NUMBER)
    if abs(number) > NUMBER_LIMIT:
        raise ValueError(OUT_OF_RANGE)
    if field.min is not None and number < field.min:
        raise ValueError(below_min(field.min))
    if field.max is not None and number > field.max:
        raise ValueError(above_max(field.max))
    return number


def _date(value: object) -> str:
    if not isinstance(value, str) or not _DATE_RE.match(value):
        raise ValueError(NOT_A_DATE)
    try:
        date.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(NOT_A_DATE) from exc
    return value


def _choice(field: FieldDef, value: object) -> str:
    if not isinstance(value, str) or value not in (field.options or []):
        raise ValueError(NOT_AN_OPTION)
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
        raise ValueError(SIGNATURE_TOO_LARGE)
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


def too_many_files(limit: int) -> str:
    if limit == 1:
        return N_("takes at most 1 file")
    return N_("takes at most {limit} files", limit=limit)


def _files(field: FieldDef, value: object) -> list[str]:
    if not isinstance(value, list) or not all(
        isinstance(item, str) and UPLOAD_ID_RE.match(item) for item in value
    ):
        raise ValueError(N_("must be a list of uploaded files"))
    limit = field.file_count_limit
    if len(value) > limit:
        raise ValueError(too_many_files(limit))
    if len(set(value)) != len(value):
        raise ValueError(N_("must not list the same file twice"))
    return list(value)


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
    if kind is FieldType.FILE:
        return _files(field, value)
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
                errors[field.id] = REQUIRED
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


def client_rules(field: FieldDef, language: str = DEFAULT_LANGUAGE) -> dict[str, Any]:
    """The checks of this module a patient's browser can make before sending, with their
    messages (the page's data-rules; static/js/fields.js `clientErrors` applies them).

    Only what the browser can decide exactly is here; the rest (a pattern JavaScript
    cannot compile the same way, the total size) stays with the server's 422.
    """
    rules: dict[str, Any] = {}
    if field.required:
        rules["required"] = REQUIRED
    kind = field.type
    if kind in (FieldType.TEXT, FieldType.TEXTAREA):
        default = DEFAULT_TEXT_MAX if kind is FieldType.TEXT else DEFAULT_TEXTAREA_MAX
        limit = int(field.max) if field.max is not None else default
        rules["maxLength"] = {"value": limit, "message": too_long(limit)}
        if field.min is not None:
            shortest = int(field.min)
            rules["minLength"] = {"value": shortest, "message": too_short(shortest)}
    elif kind is FieldType.EMAIL:
        rules["email"] = {"re": _EMAIL_RE.pattern, "maxLength": MAX_EMAIL, "message": NOT_AN_EMAIL}
    elif kind is FieldType.PHONE:
        low, high = _PHONE_DIGITS
        rules["phone"] = {"re": _PHONE_RE.pattern, "digits": [low, high], "message": NOT_A_PHONE}
    elif kind is FieldType.NUMBER:
        rules["number"] = {"message": NOT_A_NUMBER}
        rules["range"] = {"value": NUMBER_LIMIT, "message": OUT_OF_RANGE}
        if field.min is not None:
            rules["min"] = {"value": field.min, "message": below_min(field.min)}
        if field.max is not None:
            rules["max"] = {"value": field.max, "message": above_max(field.max)}
    elif kind is FieldType.DATE:
        rules["date"] = {"re": _DATE_RE.pattern, "message": NOT_A_DATE}
    elif kind is FieldType.SIGNATURE:
        rules["signature"] = {"maxChars": MAX_SIGNATURE_CHARS, "message": SIGNATURE_TOO_LARGE}
    if field.pattern is not None and kind in (
        FieldType.TEXT,
        FieldType.TEXTAREA,
        FieldType.EMAIL,
        FieldType.PHONE,
    ):
        # RE2 syntax; the page compiles it with `new RegExp` only when it can.
        rules["pattern"] = {"value": field.pattern, "message": BAD_FORMAT}
    return _translated(rules, language)


def _translated(rules: dict[str, Any], language: str) -> dict[str, Any]:
    """The rules with their messages in the page's language."""
    out: dict[str, Any] = {}
    for name, rule in rules.items():
        if isinstance(rule, str):
            out[name] = translate(rule, language)
        else:
            out[name] = {**rule, "message": translate(rule["message"], language)}
    return out
