"""What a form may say about scores (forms/validation.py): option scores on choices only,
score fields that add up earlier scored choices, ordered bands; 422s keyed by field id."""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest

from healthforms.errors import ValidationFailed
from healthforms.forms.validation import validate_fields

MOOD = {"id": "mood", "type": "radio", "label": "Mood", "options": ["ok", "low"],
        "optionScores": [0, 1]}  # fmt: skip


def total(**score: Any) -> dict[str, Any]:
    definition: dict[str, Any] = {"sum": [{"field": "mood"}]}
    definition.update(score)
    return {"id": "total", "type": "score", "label": "Total", "score": definition}


def refused(fields: list[dict[str, Any]]) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as caught:
        validate_fields(fields)
    errors: dict[str, str] = caught.value.extra["fields"]
    return errors


def test_a_sound_score_definition_is_accepted_and_round_trips() -> None:
    bands = [{"min": 0, "max": 0.5, "label": "Fine"}, {"min": 0.75, "max": 1, "label": "Low"}]
    fields = validate_fields(
        [MOOD, total(sum=[{"field": "mood", "weight": 0.5}], bands=bands, showPatient=True)]
    )
    assert fields[1].to_json()["score"] == {
        "sum": [{"field": "mood", "weight": 0.5}], "bands": bands, "showPatient": True,
    }  # fmt: skip
    assert fields[0].to_json()["optionScores"] == [0, 1]  # integers stay integers


@pytest.mark.parametrize(
    ("fields", "key", "message"),
    [
        ([{**MOOD, "optionScores": [0]}], "mood", "one number per option"),
        ([{**MOOD, "optionScores": [0, math.inf]}], "mood", "optionScores must be numbers"),
        ([{**MOOD, "optionScores": [0, 10**7]}], "mood", "optionScores must be numbers"),
        ([{**MOOD, "optionScores": [0, True]}], "mood", "optionScores"),
        ([{**MOOD, "optionScores": [0, "1"]}], "mood", "optionScores"),
        ([{"id": "t", "type": "text", "label": "T", "optionScores": [1]}], "t", "only allowed"),
        ([{"id": "ok", "type": "checkbox", "label": "I agree", "optionScores": [1]}], "ok",
         "only allowed"),
        ([MOOD, {"id": "total", "type": "score", "label": "Total"}], "total",
         "needs a score definition"),
        ([{**MOOD, "score": {"sum": [{"field": "mood"}]}}], "mood", "only allowed on score"),
        ([total(), MOOD], "total", "earlier field"),
        ([MOOD, total(sum=[{"field": "nope"}])], "total", "score.sum[0].field"),
        ([{**MOOD, "optionScores": None}, total()], "total", "choice field with optionScores"),
        ([{"id": "n", "type": "number", "label": "N"}, total(sum=[{"field": "n"}])], "total",
         "choice field with optionScores"),
        ([MOOD, total(sum=[{"field": "mood"}, {"field": "mood"}])], "total", "same field twice"),
        ([MOOD, total(sum=[])], "total", "score.sum"),
        ([MOOD, total(sum=[{"field": "mood", "weight": 1e9}])], "total", "weight"),
        ([MOOD, total(sum=[{"field": "mood", "weight": math.nan}])], "total", "weight"),
        ([MOOD, total(sum=[{"field": "mood", "weight": "2"}])], "total", "weight"),
        ([MOOD, total(bands=[{"min": 5, "max": 1, "label": "X"}])], "total", "min must not"),
        ([MOOD, total(bands=[{"min": 0, "max": 4, "label": "A"},
                             {"min": 4, "max": 9, "label": "B"}])], "total", "overlap"),
        ([MOOD, total(bands=[{"min": 5, "max": 9, "label": "B"},
                             {"min": 0, "max": 4, "label": "A"}])], "total", "ascending"),
        ([MOOD, total(bands=[{"min": 0, "max": 4, "label": "x" * 101}])], "total", "100"),
        ([MOOD, total(bands=[{"min": 0, "max": 4, "label": "  "}])], "total", "blank"),
        ([MOOD, total(bands=[{"min": 0, "max": 4}])], "total", "label"),
        ([MOOD, total(bands=[{"min": 0, "max": math.inf, "label": "A"}])], "total", "numbers"),
        ([MOOD, total(showPatient="yes")], "total", "showPatient"),
        ([MOOD, total(extra=1)], "total", "extra"),
        ([MOOD, {**total(), "required": True}], "total", "cannot be required"),
        ([MOOD, {**total(), "showWhen": {"field": "mood", "equals": "ok"}}], "total",
         "cannot have showWhen"),
        ([MOOD, {**total(), "options": ["a"]}], "total", "options are only allowed"),
        ([MOOD, total(), {"id": "after", "type": "text", "label": "After",
                          "showWhen": {"field": "total", "equals": 3}}], "after",
         "takes no answer"),
    ],
)  # fmt: skip
def test_an_unsound_definition_is_refused_naming_the_field(
    fields: list[dict[str, Any]], key: str, message: str
) -> None:
    errors = refused(fields)
    assert list(errors) == [key]
    assert message in errors[key]


async def test_the_api_answers_a_bad_score_with_a_422_keyed_by_field_id(
    editor_http: httpx.AsyncClient,
) -> None:
    bands = [{"min": 0, "max": 4, "label": "A"}, {"min": 3, "max": 9, "label": "B"}]
    reply = await editor_http.post(
        "/api/forms", json={"title": "Bad", "fields": [MOOD, total(bands=bands)]}
    )
    assert reply.status_code == 422
    assert reply.json()["code"] == "validation_error"
    assert reply.json()["fields"] == {
        "total": "score.bands[1]: bands must be in ascending order and must not overlap"
    }
