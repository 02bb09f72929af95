"""Calculated scores (docs/scores.md): a score field adds up numbers the form gives the
options of earlier choice fields, and names the band its total falls in.

Declarative only: a score is a list of (field, weight) terms and a list of bands, read
as data; nothing a form holds is ever evaluated as code. The server calculates every
score once, at submission, from the answers it has just validated and is about to
store; a value a client sends for a score field is refused (submissions/validation.py),
never trusted. The result is sealed with the answers.

Missing items: a score is complete only when every term has an answer. A term whose
field was left unanswered, or hidden by its condition, makes the score incomplete: its
value and band are null, and `answered`/`items` say how many terms had an answer.
Published instruments such as PHQ-9 and GAD-7 are only valid with every item answered,
so no partial total is ever shown as if it were the score. A checkbox list that was
shown and left with nothing ticked is an answer (none of these: it adds 0).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from healthforms.forms.schema import FieldDef, FieldType, ScoreDef
from healthforms.languages import N_, translate

# Float sums of weights like 0.1 carry noise in the last bits: a total is rounded to
# this many decimals, and a whole number is stored as an integer.
_DECIMALS = 9


@dataclass(frozen=True, slots=True)
class ScoreResult:
    """One score of one response, as stored (sealed) and shown to staff."""

    field_id: str
    label: str
    value: int | float | None  # None: incomplete (an item unanswered or hidden)
    band: str | None  # the band's label; None when incomplete or in no band
    answered: int  # terms with an answer
    items: int  # terms in all
    show_patient: bool = False

    @property
    def is_complete(self) -> bool:
        return self.value is not None

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "value": self.value,
            "band": self.band,
            "answered": self.answered,
            "items": self.items,
        }


def _number(total: float) -> int | float:
    rounded = round(total, _DECIMALS)
    return int(rounded) if rounded.is_integer() else rounded


def band_of(score: ScoreDef, value: float) -> str | None:
    """The label of the band `value` falls in (min and max included), or None."""
    for band in score.bands:
        if band.min <= value <= band.max:
            return band.label
    return None


def _term_value(source: FieldDef, answer: object, was_shown: bool) -> float | None:
    """What one source field adds (before its weight), or None when it has no answer."""
    options = source.options or []
    numbers = source.option_scores or []
    if source.type is FieldType.CHECKBOX:
        if not was_shown:
            return None
        chosen = answer if isinstance(answer, list) else []
        return math.fsum(numbers[i] for i, option in enumerate(options) if option in chosen)
    if isinstance(answer, str) and answer in options:
        return float(numbers[options.index(answer)])
    return None


def calculate(
    field: FieldDef,
    by_id: Mapping[str, FieldDef],
    answers: Mapping[str, object],
    shown: Collection[str],
) -> ScoreResult:
    """One score field's result from validated answers; `shown` names the fields the
    patient saw (their conditions held)."""
    score = field.score
    assert score is not None  # a score field always has one (forms/validation.py)
    parts: list[float] = []
    for term in score.sum:
        source = by_id.get(term.field)
        if source is None or source.option_scores is None:
            continue  # validation forbids it; counted as unanswered below
        part = _term_value(source, answers.get(term.field), term.field in shown)
        if part is not None:
            parts.append(part * term.weight)
    items = len(score.sum)
    if len(parts) < items:
        return ScoreResult(field.id, field.label, None, None, len(parts), items, score.show_patient)
    value = _number(math.fsum(parts))
    return ScoreResult(field.id, field.label, value, band_of(score, value), items, items,
                       score.show_patient)  # fmt: skip


def calculate_scores(
    fields: Sequence[FieldDef], answers: Mapping[str, object], shown: Collection[str]
) -> list[ScoreResult]:
    """Every score field's result, in form order (none when the form has no score)."""
    by_id = {f.id: f for f in fields}
    return [
        calculate(f, by_id, answers, shown)
        for f in fields
        if f.type is FieldType.SCORE and f.score is not None
    ]


def scores_json(results: Sequence[ScoreResult]) -> dict[str, dict[str, Any]]:
    """Results as stored: by score field id."""
    return {r.field_id: r.as_json() for r in results}


def patient_scores(results: Sequence[ScoreResult]) -> list[dict[str, Any]]:
    """What the patient's confirmation may show: the scores the form marks showPatient."""
    return [
        {"id": r.field_id, **{k: v for k, v in r.as_json().items() if k != "items"}}
        for r in results
        if r.show_patient
    ]


def format_score(stored: object) -> tuple[str, str]:
    """A stored result as (value, band) text for staff: the value, or "Incomplete (8 of
    9 answered)"; the band, or "" when there is none."""
    if not isinstance(stored, dict):
        return "", ""
    value = stored.get("value")
    band = stored.get("band")
    if isinstance(value, bool) or not isinstance(value, int | float):
        answered, items = stored.get("answered"), stored.get("items")
        if isinstance(answered, int) and isinstance(items, int):
            return N_(
                "Incomplete ({answered} of {items} answered)", answered=answered, items=items
            ), ""
        return N_("Incomplete"), ""
    text = str(int(value)) if float(value).is_integer() else f"{value:g}"
    return text, band if isinstance(band, str) else ""


def score_text(stored: object, language: str = "en") -> str:
    """One line for the PDF, in its language: "14 — Moderate", "Incomplete (8 of 9
    answered)" (a band is the form's own text)."""
    value, band = format_score(stored)
    if not value:
        return translate(N_("Not calculated"), language)
    value = translate(value, language)
    return f"{value} — {band}" if band else value


def patient_definition(raw_fields: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A published definition as sent to the patient: score fields and option scores
    left out (the clinic's scoring is not the patient's page; the server scores)."""
    shown: list[dict[str, Any]] = []
    for raw in raw_fields:
        if raw.get("type") == FieldType.SCORE.value:
            continue
        shown.append({k: v for k, v in raw.items() if k != "optionScores"})
    return shown
