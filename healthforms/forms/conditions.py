"""When a field, block or page is shown: the one Python evaluation of `showWhen`.

Submissions (which answers are stored), the PDF and the staff views all ask this
module; static/js/conditions.js is its twin in the browser (the patient page and the
builder's preview share it), and tests/forms/test_conditions.py runs one table of
cases through both, so the patient sees exactly what the server stores.

Semantics (docs/forms.md "Conditions"), for the answer A of the condition's field:
- A is missing when the field was hidden or left blank.
- equals V: A is V (numbers compare as numbers, text exactly, a yes/no box as a
  boolean); when A is a list of ticked options, V is one of them.
- notEquals V: not (equals V); so it holds when A is missing.
- contains V: A is a list with V in it, or text with V in it ignoring case.
- all: every condition holds; any: at least one does.
A field on a page whose page break is hidden is hidden too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from healthforms.forms.schema import Condition, FieldDef, FieldType, ShowWhen


def _blank(value: object) -> bool:
    if isinstance(value, str):
        return not value.strip()
    return value is None or value == []


def _same(answer: object, expected: object) -> bool:
    if isinstance(answer, bool) or isinstance(expected, bool):
        return answer is expected
    if isinstance(answer, int | float) and isinstance(expected, int | float):
        return float(answer) == float(expected)
    return answer == expected


def condition_holds(condition: Condition, answers: Mapping[str, object]) -> bool:
    """One condition against the answers of the fields shown so far."""
    answer = answers.get(condition.field)
    if _blank(answer):
        answer = None
    op = condition.operator
    if op == "equals":
        if isinstance(answer, list):
            return any(_same(item, condition.equals) for item in answer)
        return answer is not None and _same(answer, condition.equals)
    if op == "not_equals":
        if isinstance(answer, list):
            return not any(_same(item, condition.not_equals) for item in answer)
        return answer is None or not _same(answer, condition.not_equals)
    if op == "contains":
        needle = condition.contains
        if isinstance(answer, list):
            return needle in answer
        if isinstance(answer, str) and isinstance(needle, str):
            return needle.lower() in answer.lower()
    return False


def show_when_holds(show_when: ShowWhen, answers: Mapping[str, object]) -> bool:
    """A field's whole `showWhen`: one condition, all of several, or any of several."""
    results = (condition_holds(c, answers) for c in show_when.conditions)
    return any(results) if show_when.mode == "any" else all(results)


class Walk:
    """Goes through a form in order, saying what is shown given the answers so far.

    Conditions only look backwards (forms/validation.py), so one pass settles every
    chain. A page break's condition shows or hides everything up to the next one.
    """

    __slots__ = ("page_shown",)

    def __init__(self) -> None:
        self.page_shown = True

    def shows(self, field: FieldDef, seen: Mapping[str, object]) -> bool:
        """Whether `field` is shown; `seen` holds the answers of shown fields before it."""
        if field.type is FieldType.PAGE_BREAK:
            self.page_shown = field.show_when is None or show_when_holds(field.show_when, seen)
            return self.page_shown
        if not self.page_shown:
            return False
        return field.show_when is None or show_when_holds(field.show_when, seen)


def visible_fields(fields: list[FieldDef], answers: Mapping[str, Any]) -> list[FieldDef]:
    """The fields and blocks the patient saw, in order, given their stored answers.

    A field hidden by its condition or its page counts as unanswered for the
    conditions after it.
    """
    walk = Walk()
    shown: list[FieldDef] = []
    seen: dict[str, object] = {}
    for field in fields:
        if not walk.shows(field, seen):
            continue
        shown.append(field)
        if field.takes_answer and not _blank(answers.get(field.id)):
            seen[field.id] = answers[field.id]
    return shown
