"""A draft's answers, checked loosely: what a half-filled form may hold.

A draft is saved before the patient is done, so nothing is required and an answer
being typed need not be complete ("jane@" is a fine draft of an email address). What
is checked is what keeps the table and the page sane: only the form's own field ids,
each answer of the JSON shape its field type takes and of at most its size, and all
of them together under the submission cap (HEALTHFORMS_MAX_ANSWERS_BYTES). The full
check runs when the draft is sent (submissions/validation.py).

Signatures are never kept: a patient signs when they send, on the device they send
from. A field of a type this module does not know (a later feature's, e.g. uploads)
keeps whatever JSON its answer is, bounded by the overall cap.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from healthforms.errors import ValidationFailed
from healthforms.forms.schema import FieldDef, FieldType
from healthforms.forms.validation import DEFAULT_TEXT_MAX, DEFAULT_TEXTAREA_MAX
from healthforms.languages import N_
from healthforms.submissions.validation import (
    MAX_EMAIL,
    MAX_UNKNOWN_REPORTED,
    answers_size,
    answers_too_large,
)

MAX_SHORT_TEXT = 64  # a phone number, a date or a number typed as text
MAX_NUMBER = 1e15  # as at submission
_TEXT_LIMITS = {FieldType.TEXT: DEFAULT_TEXT_MAX, FieldType.TEXTAREA: DEFAULT_TEXTAREA_MAX}
_SHORT = {FieldType.PHONE: MAX_SHORT_TEXT, FieldType.DATE: MAX_SHORT_TEXT}


@dataclass(frozen=True, slots=True)
class FittedAnswers:
    """A draft's answers laid onto a form version: what fits, and the field ids dropped."""

    answers: dict[str, Any]
    dropped: list[str]


def _is_blank(value: object) -> bool:
    if isinstance(value, str):
        return not value.strip()
    return value is None or value == []


def _text(value: object, limit: int) -> str:
    if not isinstance(value, str):
        raise ValueError(N_("must be text"))
    if len(value) > limit:
        raise ValueError(N_("must be at most {limit} characters", limit=limit))
    return value


def _loose_one(field: FieldDef, value: object) -> object:
    """The answer to keep in a draft, or ValueError naming the rule (never the value)."""
    kind = field.type
    if kind in _TEXT_LIMITS:
        limit = int(field.max) if field.max is not None else _TEXT_LIMITS[kind]
        return _text(value, limit)
    if kind is FieldType.EMAIL:
        return _text(value, MAX_EMAIL)
    if kind in _SHORT:
        return _text(value, _SHORT[kind])
    if kind is FieldType.NUMBER:
        if isinstance(value, str):
            return _text(value, MAX_SHORT_TEXT)  # being typed: checked when sent
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(N_("must be a number"))
        # NaN and Infinity parse from a body but are not JSON: refused, never stored.
        if not math.isfinite(value) or abs(value) > MAX_NUMBER:
            raise ValueError(N_("must be a number"))
        return value
    if kind in (FieldType.SELECT, FieldType.RADIO):
        if not isinstance(value, str) or value not in (field.options or []):
            raise ValueError(N_("must be one of the options"))
        return value
    if kind is FieldType.CHECKBOX:
        if field.options is None:
            if not isinstance(value, bool):
                raise ValueError(N_("must be true or false"))
            return value
        if not isinstance(value, list) or any(item not in field.options for item in value):
            raise ValueError(N_("must only contain the options"))
        return [option for option in field.options if option in value]
    # A type a later feature added: kept as sent (plain JSON only); the cap bounds it.
    try:
        json.dumps(value, allow_nan=False)
    except ValueError as exc:
        raise ValueError(N_("is not a valid answer")) from exc
    return value


def check_draft_answers(fields: list[FieldDef], raw: object, *, max_bytes: int) -> dict[str, Any]:
    """The answers to keep in a draft, or ValidationFailed keyed by field id (API.md's
    422). Blank answers and signatures are left out; no field is required."""
    if not isinstance(raw, dict):
        raise ValidationFailed({"answers": N_("answers must be an object")})
    by_id = {field.id: field for field in fields if field.takes_answer}
    errors: dict[str, str] = {}
    kept: dict[str, Any] = {}
    for key, value in raw.items():
        field = by_id.get(key) if isinstance(key, str) else None
        if field is None:
            if len(errors) < MAX_UNKNOWN_REPORTED:
                errors[str(key)[:64]] = N_("unknown field")
            continue
        if field.type is FieldType.SIGNATURE or _is_blank(value):
            continue
        try:
            kept[field.id] = _loose_one(field, value)
        except ValueError as exc:
            # The Message itself (not str()): the answer translates it (languages.py).
            errors[field.id] = exc.args[0] if exc.args else ""
    if answers_size(kept) > max_bytes:
        errors["answers"] = answers_too_large(max_bytes)
    if errors:
        raise ValidationFailed(errors)
    return kept


def fit_answers(fields: list[FieldDef], saved: Mapping[str, Any]) -> FittedAnswers:
    """A draft's answers on the version published now (it may have been republished
    since the save): each answer that still fits its field is kept, the others dropped."""
    by_id = {field.id: field for field in fields if field.takes_answer}
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in saved.items():
        field = by_id.get(key)
        if field is None or field.type is FieldType.SIGNATURE:
            dropped.append(key)
            continue
        try:
            kept[key] = _loose_one(field, value)
        except ValueError:
            dropped.append(key)
    return FittedAnswers(kept, sorted(dropped))
