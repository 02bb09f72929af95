"""Validation of a form definition itself: what an editor may save.

Answers are checked against a definition in submissions/validation.py; this module
makes sure every definition those checks run against is sound: unique field ids,
options where a choice needs them, sane bounds, patterns that compile in a
linear-time engine, and `showWhen` conditions that only look backwards (so a
condition can never form a cycle and the form renders top to bottom).
"""

from __future__ import annotations

import math
from datetime import date
from functools import lru_cache
from typing import Any

import re2
from pydantic import ValidationError

from healthforms.errors import ValidationFailed
from healthforms.forms.schema import (
    LAYOUT_TYPES,
    MAX_FIELDS,
    MAX_FILES_RANGE,
    MAX_LABEL,
    MAX_OPTION_LEN,
    MAX_SIZE_MB_RANGE,
    Condition,
    FieldDef,
    FieldType,
    ScoreDef,
    ShowWhen,
)

MAX_TITLE = 200
MAX_DESCRIPTION = 5000
# Text answers without an explicit `max` are still bounded.
DEFAULT_TEXT_MAX = 1000
DEFAULT_TEXTAREA_MAX = 10_000
# First, middle, last and a second surname, at most.
MAX_NAME_FIELDS = 4
# Bound RE2's memory per pattern; with a bounded length this bounds compile time too.
_RE2_MAX_MEM = 1 << 20

OPTION_TYPES = frozenset({FieldType.SELECT, FieldType.RADIO, FieldType.CHECKBOX})
PATTERN_TYPES = frozenset({FieldType.TEXT, FieldType.TEXTAREA, FieldType.EMAIL, FieldType.PHONE})
BOUND_TYPES = frozenset({FieldType.NUMBER, FieldType.TEXT, FieldType.TEXTAREA})


# Option scores and weights stay small, so no sum of them loses precision or overflows.
MAX_SCORE_NUMBER = 1_000_000
_RANGE = f"from -{MAX_SCORE_NUMBER} to {MAX_SCORE_NUMBER}"


class UnsafePattern(ValueError):
    """The pattern does not compile in RE2 (e.g. backreferences) or is too large."""


@lru_cache(maxsize=512)
def compile_pattern(pattern: str) -> Any:
    """Compile with RE2: matching is linear in the input, so no pattern can hang a worker.

    Python's `re` backtracks: `(a+)+$` against a long line of "a"s followed by "b" runs
    for minutes (ReDoS). RE2 refuses the constructs that need backtracking instead.
    """
    options = re2.Options()
    options.log_errors = False
    options.max_mem = _RE2_MAX_MEM
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        raise UnsafePattern("pattern is not a supported regular expression") from exc


def _field_key(raw: object, index: int) -> str:
    if isinstance(raw, dict):
        field_id = raw.get("id")
        if isinstance(field_id, str) and field_id:
            return field_id[:64]
    return f"fields[{index}]"


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    message = str(err.get("msg", "invalid"))
    return f"{loc}: {message}" if loc else message


_LAYOUT_NAMES = {
    FieldType.HEADING: "a heading",
    FieldType.PARAGRAPH: "a paragraph",
    FieldType.PAGE_BREAK: "a page break",
}


def _is_date(value: str) -> bool:
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return len(value) == 10


def _check_layout(field: FieldDef) -> str | None:
    """A heading, paragraph or page break carries text (and maybe a condition) only."""
    name = _LAYOUT_NAMES[field.type]
    for prop, given in (
        ("required", field.required),
        ("options", field.options is not None),
        ("min and max", field.min is not None or field.max is not None),
        ("pattern", field.pattern is not None),
        ("helpText", field.help_text is not None),
        ("identifies", field.identifies is not None),
    ):
        if given:
            return f"{prop} is not allowed on {name}: it takes no answer"
    return None


def _check_condition(
    condition: Condition, field: FieldDef, earlier: dict[str, FieldDef]
) -> str | None:
    """Whether one condition can be tested and can ever hold (None when sound)."""
    op = condition.operator
    if op is None:
        return "showWhen needs exactly one of equals, notEquals or contains"
    if condition.field == field.id:
        return "showWhen cannot refer to the field itself"
    target = earlier.get(condition.field)
    if target is None:
        return "showWhen must refer to an earlier field"
    if not target.takes_answer:
        return f"showWhen must refer to a question: {target.id} takes no answer"
    value = condition.value
    kind = target.type
    if op == "contains":
        if kind in (FieldType.TEXT, FieldType.TEXTAREA, FieldType.EMAIL, FieldType.PHONE):
            if not isinstance(value, str) or not value.strip():
                return "showWhen contains needs some text to look for"
            return None
        if kind is not FieldType.CHECKBOX or target.options is None:
            return (
                "showWhen contains only applies to text or multiple-choice answers, "
                f"not {target.id}"
            )
    if kind in OPTION_TYPES and target.options is not None:
        if not isinstance(value, str) or value not in target.options:
            return f"showWhen can never hold: the value is not one of {target.id}'s options"
        return None
    if kind is FieldType.CHECKBOX:
        if not isinstance(value, bool):
            return f"showWhen on the yes/no box {target.id} needs true or false"
        return None
    if kind is FieldType.NUMBER:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"showWhen on the number {target.id} needs a number"
        if (target.min is not None and value < target.min) or (
            target.max is not None and value > target.max
        ):
            if op == "equals":
                return f"showWhen can never hold: {value:g} is outside {target.id}'s range"
        return None
    if kind is FieldType.DATE:
        if not isinstance(value, str) or not _is_date(value):
            return f"showWhen on the date {target.id} needs a date (yyyy-mm-dd)"
        return None
    if kind in (FieldType.TEXT, FieldType.TEXTAREA, FieldType.EMAIL, FieldType.PHONE):
        if not isinstance(value, str) or not value.strip():
            return f"showWhen on {target.id} needs some text"
        return None
    return f"showWhen cannot test {target.id}: its answers are not comparable"


def _never_all(conditions: list[Condition], earlier: dict[str, FieldDef]) -> str | None:
    """Conditions that cannot all hold at once: two values of one single answer, or a
    value both asked for and excluded."""
    wanted: dict[str, list[object]] = {}
    for condition in conditions:
        if condition.operator == "equals":
            wanted.setdefault(condition.field, []).append(condition.equals)
    for field_id, values in wanted.items():
        target = earlier[field_id]
        several = target.type is FieldType.CHECKBOX and target.options is not None
        if not several and any(v != values[0] for v in values):
            return f"showWhen can never hold: {field_id} cannot have two answers at once"
    for condition in conditions:
        if condition.operator == "not_equals" and condition.not_equals in wanted.get(
            condition.field, []
        ):
            return f"showWhen can never hold: {condition.field} cannot both be and not be one value"
    return None


def _check_show_when(
    show_when: ShowWhen, field: FieldDef, earlier: dict[str, FieldDef]
) -> str | None:
    group = show_when.all_of if show_when.all_of is not None else show_when.any_of
    if group is not None:
        single = show_when.model_fields_set & {"field", "equals", "not_equals", "contains"}
        if single or (show_when.all_of is not None and show_when.any_of is not None):
            return "showWhen is one condition, or all or any of several: not both"
        if not group:
            return "showWhen all/any needs at least one condition"
    for condition in show_when.conditions:
        problem = _check_condition(condition, field, earlier)
        if problem is not None:
            return problem
    if show_when.mode == "all":
        return _never_all(show_when.conditions, earlier)
    return None


def _check_field(field: FieldDef, earlier: dict[str, FieldDef]) -> str | None:
    """The first problem with one field (given the fields before it), or None."""
    if field.id in earlier:
        return "duplicate field id"
    if field.type is not FieldType.PARAGRAPH and len(field.label) > MAX_LABEL:
        return f"label: at most {MAX_LABEL} characters"
    if field.type in LAYOUT_TYPES:
        problem = _check_layout(field)
        if problem is not None:
            return problem
    if field.type in OPTION_TYPES:
        if field.options is not None or field.type is not FieldType.CHECKBOX:
            options = field.options or []
            if not options:
                return "options are required for this field type"
            if any(not option.strip() or len(option) > MAX_OPTION_LEN for option in options):
                return "options must be non-empty text"
            if len(set(options)) != len(options):
                return "options must be unique"
    elif field.options is not None:
        return "options are only allowed for select, radio and checkbox fields"
    if field.min is not None or field.max is not None:
        if field.type not in BOUND_TYPES:
            return "min and max are only allowed for number, text and textarea fields"
        if field.min is not None and field.max is not None and field.min > field.max:
            return "min must not be greater than max"
        if field.type is not FieldType.NUMBER:
            for bound in (field.min, field.max):
                if bound is not None and (bound < 0 or bound != int(bound)):
                    return "length bounds must be whole numbers of at least 0"
    if field.pattern is not None:
        if field.type not in PATTERN_TYPES:
            return "pattern is only allowed for text, textarea, email and phone fields"
        try:
            compile_pattern(field.pattern)
        except UnsafePattern as exc:
            return str(exc)
    problem = _check_file_options(field)
    if problem is not None:
        return problem
    if field.identifies == "name" and field.type is not FieldType.TEXT:
        return "only a text field can hold the patient's name"
    if field.identifies == "birthDate" and field.type is not FieldType.DATE:
        return "only a date field can hold the patient's date of birth"
    if field.identifies == "birthDate" and any(
        other.identifies == "birthDate" for other in earlier.values()
    ):
        return "only one field can hold the patient's date of birth"
    if field.identifies == "name" and (
        sum(other.identifies == "name" for other in earlier.values()) >= MAX_NAME_FIELDS
    ):
        return f"at most {MAX_NAME_FIELDS} fields can hold parts of the patient's name"
    problem = _check_scoring(field, earlier)
    if problem is not None:
        return problem
    if field.show_when is not None:
        return _check_show_when(field.show_when, field, earlier)
    return None


def _check_file_options(field: FieldDef) -> str | None:
    """A file field's accept, maxFiles and maxSizeMb (docs/uploads.md), or None."""
    given = field.model_fields_set & {"accept", "max_files", "max_size_mb"}
    if field.type is not FieldType.FILE:
        return "accept, maxFiles and maxSizeMb are only allowed for file fields" if given else None
    if field.accept is not None and (
        not field.accept or len(set(field.accept)) != len(field.accept)
    ):
        return 'accept must list "image", "pdf" or both, once each'
    low, high = MAX_FILES_RANGE
    if field.max_files is not None and not low <= field.max_files <= high:
        return f"maxFiles must be a whole number from {low} to {high}"
    low, high = MAX_SIZE_MB_RANGE
    if field.max_size_mb is not None and not low <= field.max_size_mb <= high:
        return f"maxSizeMb must be a whole number of megabytes from {low} to {high}"
    return None


def _is_small_number(value: float) -> bool:
    return math.isfinite(value) and abs(value) <= MAX_SCORE_NUMBER


def is_scored_choice(field: FieldDef) -> bool:
    """A choice field whose options carry numbers a score can add up."""
    return field.type in OPTION_TYPES and bool(field.options) and field.option_scores is not None


def _check_scoring(field: FieldDef, earlier: dict[str, FieldDef]) -> str | None:
    """The first problem with a field's `optionScores` or `score`, or None."""
    if field.option_scores is not None:
        if field.type not in OPTION_TYPES or not field.options:
            return "optionScores are only allowed on select, radio and checkbox fields with options"
        if len(field.option_scores) != len(field.options):
            return "optionScores must have one number per option, in the same order"
        if not all(_is_small_number(n) for n in field.option_scores):
            return f"optionScores must be numbers {_RANGE}"
    if field.type is not FieldType.SCORE:
        return "score is only allowed on score fields" if field.score is not None else None
    if field.score is None:
        return "a score field needs a score definition"
    if field.required:
        return "a score field is calculated, so it cannot be required"
    if field.show_when is not None:
        return "a score field is always calculated, so it cannot have showWhen"
    return _check_score(field.score, earlier)


def _check_score(score: ScoreDef, earlier: dict[str, FieldDef]) -> str | None:
    seen: set[str] = set()
    for index, term in enumerate(score.sum):
        where = f"score.sum[{index}]"
        source = earlier.get(term.field)
        if source is None:
            return f"{where}.field must refer to an earlier field"
        if not is_scored_choice(source):
            return f"{where}.field must refer to a choice field with optionScores"
        if term.field in seen:
            return f"{where}.field adds the same field twice"
        seen.add(term.field)
        if not _is_small_number(term.weight):
            return f"{where}.weight must be a number {_RANGE}"
    previous_max: float | None = None
    for index, band in enumerate(score.bands):
        where = f"score.bands[{index}]"
        if not (_is_small_number(band.min) and _is_small_number(band.max)):
            return f"{where}: min and max must be numbers {_RANGE}"
        if band.min > band.max:
            return f"{where}: min must not be greater than max"
        if not band.label.strip():
            return f"{where}.label must not be blank"
        if previous_max is not None and band.min <= previous_max:
            return f"{where}: bands must be in ascending order and must not overlap"
        previous_max = band.max
    return None


def validate_fields(raw_fields: object) -> list[FieldDef]:
    """Parse and check a list of Field objects; raise ValidationFailed keyed by field id."""
    if not isinstance(raw_fields, list):
        raise ValidationFailed({"fields": "fields must be a list"})
    if len(raw_fields) > MAX_FIELDS:
        raise ValidationFailed({"fields": f"at most {MAX_FIELDS} fields"})
    errors: dict[str, str] = {}
    earlier: dict[str, FieldDef] = {}
    parsed: list[FieldDef] = []
    for index, raw in enumerate(raw_fields):
        key = _field_key(raw, index)
        try:
            field = FieldDef.model_validate(raw)
        except ValidationError as exc:
            errors.setdefault(key, _first_error(exc))
            continue
        problem = _check_field(field, earlier)
        if problem is not None:
            errors.setdefault(key, problem)
            if problem == "duplicate field id":
                continue
        earlier[field.id] = field
        parsed.append(field)
    if not errors:
        errors.update(_empty_pages(parsed))
    if errors:
        raise ValidationFailed(errors)
    return parsed


def _empty_pages(fields: list[FieldDef]) -> dict[str, str]:
    """A page break must be followed by something before the next one or the end."""
    problems: dict[str, str] = {}
    for index, field in enumerate(fields):
        if field.type is not FieldType.PAGE_BREAK:
            continue
        following = fields[index + 1] if index + 1 < len(fields) else None
        if following is None or following.type is FieldType.PAGE_BREAK:
            problems[field.id] = "a page needs at least one question or block after its page break"
    return problems


def validate_title(title: object) -> str:
    if not isinstance(title, str) or not title.strip():
        raise ValidationFailed({"title": "title is required"})
    if len(title) > MAX_TITLE:
        raise ValidationFailed({"title": f"at most {MAX_TITLE} characters"})
    return title.strip()


def validate_description(description: object) -> str:
    if description is None:
        return ""
    if not isinstance(description, str):
        raise ValidationFailed({"description": "description must be text"})
    if len(description) > MAX_DESCRIPTION:
        raise ValidationFailed({"description": f"at most {MAX_DESCRIPTION} characters"})
    return description


# A form's retention period (docs/retention.md), in days after submission: at least a
# day, at most a century. None keeps responses for ever.
MIN_RETENTION_DAYS = 1
MAX_RETENTION_DAYS = 36_500
_RETENTION_MESSAGE = (
    f"a whole number of days from {MIN_RETENTION_DAYS} to {MAX_RETENTION_DAYS}, "
    "or null to keep responses for ever"
)


def validate_retention_days(value: object) -> int | None:
    if value is None:
        return None
    # bool is an int in Python: `true` must not read as one day.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationFailed({"retentionDays": _RETENTION_MESSAGE})
    if not MIN_RETENTION_DAYS <= value <= MAX_RETENTION_DAYS:
        raise ValidationFailed({"retentionDays": _RETENTION_MESSAGE})
    return value


# What the patient reads after sending (docs/branding.md): plain text, never markup.
MAX_THANK_YOU = 1000


def validate_thank_you_message(value: object) -> str | None:
    """Plain text of at most MAX_THANK_YOU characters; None (or blank) for the default."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationFailed({"thankYouMessage": "thankYouMessage must be text"})
    text = value.replace("\r\n", "\n").strip()
    if len(text) > MAX_THANK_YOU:
        raise ValidationFailed({"thankYouMessage": f"at most {MAX_THANK_YOU} characters"})
    if any(ord(ch) < 0x20 and ch not in "\n\t" for ch in text):
        raise ValidationFailed({"thankYouMessage": "control characters are not allowed"})
    return text or None
