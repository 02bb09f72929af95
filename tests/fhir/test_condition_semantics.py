"""Every enableWhen we emit means exactly the showWhen it came from.

A small evaluator of FHIR enableWhen (the operator definitions of the spec) runs beside
forms/conditions.py over many answer sets; they must agree for every item that has an
enableWhen. `!=` is evaluated under both wordings the spec has had (R4: "at least one
answer is not equal"; later releases: "no answer is equal"), since a receiver may use
either: our mapping must hold under both.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from healthforms.fhir.codes import option_code
from healthforms.fhir.questionnaire import questionnaire
from healthforms.forms.conditions import show_when_holds
from healthforms.forms.models import FormVersion
from healthforms.forms.schema import FieldDef, fields_from_json
from tests.fhir.helpers import EVERY_FIELD, all_items

NotEquals = Callable[[list[object], object], bool]


def r4_not_equals(answers: list[object], value: object) -> bool:
    return any(a != value for a in answers)


def later_not_equals(answers: list[object], value: object) -> bool:
    return all(a != value for a in answers)


def fhir_values(field: FieldDef, answer: object) -> list[object]:
    """A stored answer as the values of its QuestionnaireResponse answers."""
    if answer is None or answer == "" or answer == []:
        return []
    values = answer if isinstance(answer, list) else [answer]
    if field.options is not None:
        return [("coding", option_code(str(v), field.options.index(str(v)))) for v in values]
    return list(values)


def expected_value(entry: Mapping[str, Any]) -> object:
    if "answerCoding" in entry:
        return ("coding", entry["answerCoding"]["code"])
    key = next(k for k in entry if k.startswith("answer"))
    return entry[key]


def enabled(item: Mapping[str, Any], answers: Mapping[str, list[object]], ne: NotEquals) -> bool:
    results = []
    for entry in item["enableWhen"]:
        given = answers.get(entry["question"], [])
        op, value = entry["operator"], expected_value(entry)
        if op == "exists":
            results.append(bool(given) == value)
        elif op == "=":
            results.append(any(_same(a, value) for a in given))
        elif op == "!=":
            results.append(bool(given) and ne([_key(a) for a in given], _key(value)))
        else:  # pragma: no cover - never emitted
            raise AssertionError(op)
    return any(results) if item.get("enableBehavior") == "any" else all(results)


def _key(value: object) -> object:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _same(a: object, b: object) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return _key(a) == _key(b)


def candidates(field: FieldDef) -> list[object]:
    """Answers worth trying for a field: missing, each value a condition names, others."""
    kind = field.type.value
    if field.options is not None and kind == "checkbox":
        subsets: list[object] = [[]]
        for size in range(1, len(field.options) + 1):
            subsets.extend(list(c) for c in itertools.combinations(field.options, size))
        return subsets
    if field.options is not None:
        return [None, *field.options]
    if kind == "checkbox":
        return [None, True, False]
    if kind == "number":
        return [None, 0, 30, 30.0, 30.5, 31.5]
    if kind == "date":
        return [None, "2000-01-01", "1999-12-31"]
    return [None, "pain in back", "Pain", "no", ""]


@pytest.mark.parametrize("ne", [r4_not_equals, later_not_equals], ids=["r4", "later"])
def test_enable_when_agrees_with_show_when_on_every_answer_set(ne: NotEquals) -> None:
    fields = fields_from_json(EVERY_FIELD)
    version = FormVersion(form_id="frm_x", version=1, title="T", description="", fields=EVERY_FIELD,
                          published_at=datetime(2026, 1, 1, tzinfo=UTC))  # fmt: skip
    items = all_items(questionnaire(version, base_url="http://x", status="active")["item"])
    by_id = {f.id: f for f in fields}
    rng = random.Random(16)
    checked = 0
    for field in fields:
        item = items[field.id]
        if field.show_when is None or "enableWhen" not in item:
            continue
        targets = sorted({c.field for c in field.show_when.conditions})
        combos = list(itertools.product(*(candidates(by_id[t]) for t in targets)))
        for combo in rng.sample(combos, min(len(combos), 400)):
            stored = {t: v for t, v in zip(targets, combo, strict=True) if v not in (None, "", [])}
            fhir = {t: fhir_values(by_id[t], v) for t, v in stored.items()}
            assert enabled(item, fhir, ne) == show_when_holds(field.show_when, stored), (
                field.id,
                stored,
            )
            checked += 1
    assert checked >= 40  # every answer set of the 8 exact conditions and their targets


# Conditions enableWhen cannot write: each goes out as SDC's enableWhenExpression.
EXPRESSION_FIELDS: list[dict[str, Any]] = [
    {"id": "story", "type": "textarea", "label": "Story"},
    {
        "id": "allergies",
        "type": "checkbox",
        "label": "Allergies",
        "options": ["Latex", "O'Brien mix", "Back\\slash"],
    },  # fmt: skip
    {"id": "smoker", "type": "radio", "label": "Smoke?", "options": ["Yes", "No"]},
    {"id": "age", "type": "number", "label": "Age"},
    {"id": "dob", "type": "date", "label": "Born"},
    {"id": "consent", "type": "checkbox", "label": "Consent"},
    {"id": "e1", "type": "text", "label": "E1", "showWhen": {"field": "story", "contains": "it's"}},
    {
        "id": "e2",
        "type": "text",
        "label": "E2",
        "showWhen": {"field": "allergies", "notEquals": "O'Brien mix"},
    },  # fmt: skip
    {
        "id": "e3",
        "type": "text",
        "label": "E3",
        "showWhen": {
            "all": [{"field": "smoker", "equals": "Yes"}, {"field": "age", "notEquals": 30.5}]
        },
    },  # fmt: skip
    {
        "id": "e4",
        "type": "text",
        "label": "E4",
        "showWhen": {
            "all": [
                {"field": "consent", "notEquals": True},
                {"field": "dob", "notEquals": "2000-01-01"},
            ]
        },
    },  # fmt: skip
    {
        "id": "e5",
        "type": "text",
        "label": "E5",
        "showWhen": {
            "any": [
                {"field": "allergies", "contains": "Back\\slash"},
                {"field": "story", "contains": "PAIN"},
            ]
        },
    },  # fmt: skip
]
STORIES = [None, "It's fine", "its fine", "back pain", "Pain", "it\u2019s"]


def response_of(by_id: Mapping[str, FieldDef], stored: Mapping[str, object]) -> dict[str, Any]:
    """A QuestionnaireResponse holding these stored answers, typed as fhir/response.py
    types them (a Coding by option code)."""
    items = []
    for field_id, answer in stored.items():
        field = by_id[field_id]
        values = answer if isinstance(answer, list) else [answer]
        typed: list[dict[str, Any]]
        if field.options is not None:
            typed = [{"valueCoding": {"code": option_code(str(v), field.options.index(str(v)))}}
                     for v in values]  # fmt: skip
        elif isinstance(answer, bool):
            typed = [{"valueBoolean": answer}]
        elif field.type.value == "number":
            typed = [{"valueDecimal": answer}]
        elif field.type.value == "date":
            typed = [{"valueDate": answer}]
        else:
            typed = [{"valueString": answer}]
        items.append({"linkId": field_id, "answer": typed})
    return {"resourceType": "QuestionnaireResponse", "status": "completed", "item": items}


def test_enable_when_expressions_agree_with_show_when_on_every_answer_set() -> None:
    fhirpath = pytest.importorskip("fhirpathpy", reason="fhirpathpy (dev extra) evaluates SDC")
    model = pytest.importorskip("fhirpathpy.models").models["r4"]
    fields = fields_from_json(EXPRESSION_FIELDS)
    by_id = {f.id: f for f in fields}
    version = FormVersion(
        form_id="frm_x",
        version=1,
        title="T",
        description="",
        fields=EXPRESSION_FIELDS,
        published_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    items = all_items(questionnaire(version, base_url="http://x", status="active")["item"])
    checked = 0
    for field in fields:
        if field.show_when is None:
            continue
        item = items[field.id]
        assert "enableWhen" not in item, field.id
        expression = next(
            e["valueExpression"]["expression"]
            for e in item["extension"]
            if e["url"].endswith("sdc-questionnaire-enableWhenExpression")
        )
        targets = sorted({c.field for c in field.show_when.conditions})
        pools = [STORIES if t == "story" else candidates(by_id[t]) for t in targets]
        for combo in itertools.product(*pools):
            stored = {t: v for t, v in zip(targets, combo, strict=True) if v not in (None, "", [])}
            resource = response_of(by_id, stored)
            got = fhirpath.evaluate(resource, expression, {"resource": resource}, model=model)
            assert got == [show_when_holds(field.show_when, stored)], (field.id, stored, got)
            checked += 1
    assert checked >= 60
