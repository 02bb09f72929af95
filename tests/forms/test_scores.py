"""Calculated scores (forms/scores.py) against the published scoring of PHQ-9 and GAD-7,
and the rules for missing, hidden, weighted and multiple-choice items."""

from __future__ import annotations

from typing import Any

import pytest

from healthforms.errors import ValidationFailed
from healthforms.forms.conditions import visible_fields
from healthforms.forms.schema import FieldDef
from healthforms.forms.scores import (
    ScoreResult,
    calculate_scores,
    format_score,
    patient_definition,
    score_text,
)
from healthforms.forms.templates import TEMPLATES
from healthforms.forms.validation import validate_fields
from healthforms.submissions.validation import validate_answers

FREQUENCY = ["Not at all", "Several days", "More than half the days", "Nearly every day"]


def score_of(fields: list[FieldDef], raw: dict[str, Any]) -> ScoreResult:
    """As a submission scores: validate the answers, then score what would be stored."""
    answers = validate_answers(fields, raw)
    shown = {f.id for f in visible_fields(fields, answers)}
    (result,) = calculate_scores(fields, answers, shown)
    return result


def answers_for(items: list[int]) -> dict[str, str]:
    return {f"q{n}": FREQUENCY[value] for n, value in enumerate(items, start=1)}


PHQ9_EXAMPLES = [
    ([0, 0, 0, 0, 0, 0, 0, 0, 0], 0, "Minimal"),
    ([1, 1, 1, 1, 0, 0, 0, 0, 0], 4, "Minimal"),
    ([1, 1, 1, 1, 1, 0, 0, 0, 0], 5, "Mild"),
    ([3, 3, 3, 0, 0, 0, 0, 0, 0], 9, "Mild"),
    ([2, 2, 2, 2, 2, 0, 0, 0, 0], 10, "Moderate"),
    ([3, 3, 2, 2, 1, 1, 1, 1, 0], 14, "Moderate"),
    ([3, 3, 3, 3, 3, 0, 0, 0, 0], 15, "Moderately severe"),
    ([3, 3, 3, 3, 3, 2, 1, 1, 0], 19, "Moderately severe"),
    ([3, 3, 3, 3, 2, 2, 2, 1, 1], 20, "Severe"),
    ([3, 3, 3, 3, 3, 3, 3, 3, 3], 27, "Severe"),
]

GAD7_EXAMPLES = [
    ([0, 0, 0, 0, 0, 0, 0], 0, "Minimal"),
    ([1, 1, 1, 1, 0, 0, 0], 4, "Minimal"),
    ([1, 1, 1, 1, 1, 0, 0], 5, "Mild"),
    ([3, 3, 3, 0, 0, 0, 0], 9, "Mild"),
    ([2, 2, 2, 2, 2, 0, 0], 10, "Moderate"),
    ([3, 3, 2, 2, 2, 1, 1], 14, "Moderate"),
    ([3, 3, 3, 3, 3, 0, 0], 15, "Severe"),
    ([3, 3, 3, 3, 3, 3, 3], 21, "Severe"),
]


@pytest.mark.parametrize(("items", "total", "band"), PHQ9_EXAMPLES)
def test_phq9_worked_examples_hit_the_published_bands(
    items: list[int], total: int, band: str
) -> None:
    fields = validate_fields(list(TEMPLATES["phq9"].fields))
    result = score_of(fields, {**answers_for(items), "difficulty": "Somewhat difficult"})
    assert sum(items) == total
    assert (result.value, result.band) == (total, band)
    assert (result.answered, result.items) == (9, 9)
    assert result.field_id == "phq9_total" and result.show_patient is False


@pytest.mark.parametrize(("items", "total", "band"), GAD7_EXAMPLES)
def test_gad7_worked_examples_hit_the_published_bands(
    items: list[int], total: int, band: str
) -> None:
    fields = validate_fields(list(TEMPLATES["gad7"].fields))
    result = score_of(fields, answers_for(items))
    assert sum(items) == total
    assert (result.value, result.band) == (total, band)
    assert (result.answered, result.items) == (7, 7)


def test_phq9_uses_the_published_item_wordings_and_answer_scale() -> None:
    fields = TEMPLATES["phq9"].fields
    labels = [f["label"] for f in fields if f["type"] == "radio"]
    assert labels[0] == "1. Little interest or pleasure in doing things"
    assert labels[8] == (
        "9. Thoughts that you would be better off dead or of hurting yourself in some way"
    )
    assert all(f["options"] == FREQUENCY for f in fields if f["id"].startswith("q"))
    assert all(f["optionScores"] == [0, 1, 2, 3] for f in fields if f["id"].startswith("q"))
    # The difficulty question is asked, and not scored.
    difficulty = next(f for f in fields if f["id"] == "difficulty")
    assert "optionScores" not in difficulty
    assert "phq9" in TEMPLATES and "difficulty" not in str(fields[-1]["score"])


def test_the_difficulty_question_never_changes_the_total() -> None:
    fields = validate_fields(list(TEMPLATES["phq9"].fields))
    items = [1, 2, 0, 1, 0, 0, 3, 0, 0]
    scores = {
        score_of(fields, {**answers_for(items), "difficulty": d}).value
        for d in ("Not difficult at all", "Extremely difficult")
    }
    assert scores == {7}


def definition(*extra: dict[str, Any], score: dict[str, Any] | None = None) -> list[FieldDef]:
    return validate_fields(
        [
            {"id": "a", "type": "radio", "label": "A", "options": ["x", "y"],
             "optionScores": [0, 2]},
            {"id": "b", "type": "select", "label": "B", "options": ["x", "y"],
             "optionScores": [1, 3]},
            *extra,
            {"id": "total", "type": "score", "label": "Total",
             "score": score or {"sum": [{"field": "a"}, {"field": "b"}],
                                "bands": [{"min": 0, "max": 2, "label": "Low"},
                                          {"min": 3, "max": 5, "label": "High"}]}},
        ]
    )  # fmt: skip


def test_an_unanswered_item_makes_the_score_incomplete_never_a_partial_total() -> None:
    result = score_of(definition(), {"a": "y"})
    assert result.value is None and result.band is None
    assert (result.answered, result.items) == (1, 2)
    assert format_score(result.as_json()) == ("Incomplete (1 of 2 answered)", "")
    assert score_text(result.as_json()) == "Incomplete (1 of 2 answered)"


def test_an_item_hidden_by_its_condition_makes_the_score_incomplete() -> None:
    gate = {"id": "gate", "type": "radio", "label": "Gate", "options": ["open", "shut"]}
    gated = {"id": "c", "type": "radio", "label": "C", "options": ["x", "y"],
             "optionScores": [0, 1], "showWhen": {"field": "gate", "equals": "open"}}  # fmt: skip
    fields = definition(gate, gated, score={"sum": [{"field": "a"}, {"field": "c"}]})
    # The patient's page would hide `c`; a client that sends it anyway is not believed.
    hidden = score_of(fields, {"a": "x", "gate": "shut", "c": "y"})
    assert (hidden.value, hidden.answered) == (None, 1)
    shown = score_of(fields, {"a": "y", "gate": "open", "c": "y"})
    assert (shown.value, shown.band) == (3, None)  # no bands: a value, no band


def test_weights_multiply_and_fractional_totals_are_exact_to_the_last_decimal() -> None:
    fields = definition(
        score={"sum": [{"field": "a", "weight": 0.1}, {"field": "b", "weight": 0.2}],
               "bands": [{"min": 0, "max": 0.5, "label": "Low"},
                         {"min": 0.6, "max": 1, "label": "High"}]},
    )  # fmt: skip
    result = score_of(fields, {"a": "y", "b": "x"})  # 2 * 0.1 + 1 * 0.2 = 0.4, not 0.4000001
    assert (result.value, result.band) == (0.4, "Low")
    whole = score_of(fields, {"a": "y", "b": "y"})  # 0.2 + 0.6 = 0.8
    assert (whole.value, whole.band) == (0.8, "High")
    negative = definition(score={"sum": [{"field": "a", "weight": -1}, {"field": "b"}]})
    assert score_of(negative, {"a": "y", "b": "y"}).value == 1
    assert isinstance(score_of(negative, {"a": "y", "b": "y"}).value, int)


def test_a_value_between_bands_has_no_band() -> None:
    fields = definition(
        score={"sum": [{"field": "a", "weight": 0.5}, {"field": "b"}],
               "bands": [{"min": 0, "max": 1, "label": "Low"},
                         {"min": 2, "max": 9, "label": "High"}]},
    )  # fmt: skip
    result = score_of(fields, {"a": "x", "b": "x"})
    assert result.value == 1
    gap = score_of(fields, {"a": "y", "b": "x"})  # 1 + 1 = 2
    assert (gap.value, gap.band) == (2, "High")
    assert score_of(fields, {"a": "y", "b": "y"}).value == 4


def test_a_checkbox_list_adds_the_numbers_of_every_ticked_option() -> None:
    symptoms = {"id": "symptoms", "type": "checkbox", "label": "Symptoms",
                "options": ["cough", "fever", "rash"], "optionScores": [1, 2, 4]}  # fmt: skip
    fields = definition(symptoms, score={"sum": [{"field": "symptoms"}], "bands": []})
    assert score_of(fields, {"symptoms": ["cough", "rash"]}).value == 5
    # Shown and left with nothing ticked is an answer ("none of these"): 0, complete.
    none = score_of(fields, {})
    assert (none.value, none.answered) == (0, 1)


def test_a_client_sent_score_is_refused_never_trusted() -> None:
    with pytest.raises(ValidationFailed) as refused:
        validate_answers(definition(), {"a": "x", "b": "x", "total": 27})
    fields = refused.value.extra["fields"]
    assert set(fields) == {"total"}
    assert "calculated" in fields["total"]


def test_the_patient_definition_leaves_out_scores_and_option_scores() -> None:
    raw = list(TEMPLATES["phq9"].fields)
    shown = patient_definition(raw)
    assert [f["id"] for f in shown] == [
        "instructions", *(f"q{n}" for n in range(1, 10)), "difficulty",
    ]  # fmt: skip
    assert not any("optionScores" in f for f in shown)
    assert all("optionScores" in f for f in raw if f["id"].startswith("q"))  # not mutated
