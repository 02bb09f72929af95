"""One meaning of showWhen: forms/conditions.py and static/js/conditions.js agree.

The patient page and the builder's preview evaluate conditions in the browser; the
server decides again which answers to require and store. Every case here (a table of
hand-picked ones, then a few hundred generated forms) runs through both
implementations, the JavaScript one in Node, and they must name the same shown ids.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from healthforms.errors import ValidationFailed
from healthforms.forms.conditions import visible_fields
from healthforms.forms.schema import fields_from_json
from healthforms.forms.validation import validate_fields

CONDITIONS_JS = (
    Path(__file__).resolve().parents[2] / "healthforms" / "web" / "static" / "js" / "conditions.js"
)
NODE = shutil.which("node")

RUNNER = """
import { readFileSync } from "node:fs";
const { visibleIds } = await import(process.argv[1]);
const cases = JSON.parse(readFileSync(0, "utf8"));
const out = cases.map(({ fields, answers }) => [...visibleIds(
  fields.map((f) => ({ ...f, value: answers[f.id] })))].sort());
process.stdout.write(JSON.stringify(out));
"""

Case = tuple[list[dict[str, Any]], dict[str, Any]]

RADIO = {"id": "smoker", "type": "radio", "label": "Smoker", "options": ["yes", "no"]}
MULTI = {"id": "allergy", "type": "checkbox", "label": "Allergies", "options": ["Nuts", "Dust"]}
CONSENT = {"id": "ok", "type": "checkbox", "label": "I agree"}
NUMBER = {"id": "age", "type": "number", "label": "Age"}
TEXT = {"id": "note", "type": "text", "label": "Note"}


def q(field_id: str, show_when: dict[str, Any] | None = None, kind: str = "text") -> dict[str, Any]:
    field: dict[str, Any] = {"id": field_id, "type": kind, "label": field_id}
    if show_when is not None:
        field["showWhen"] = show_when
    return field


TABLE: list[Case] = [
    ([RADIO, q("packs", {"field": "smoker", "equals": "yes"})], {"smoker": "yes"}),
    ([RADIO, q("packs", {"field": "smoker", "equals": "yes"})], {"smoker": "no"}),
    ([RADIO, q("packs", {"field": "smoker", "equals": "yes"})], {}),
    ([RADIO, q("why", {"field": "smoker", "notEquals": "yes"})], {}),
    ([MULTI, q("which", {"field": "allergy", "equals": "Nuts"})], {"allergy": ["Nuts", "Dust"]}),
    ([MULTI, q("which", {"field": "allergy", "contains": "Dust"})], {"allergy": ["Nuts"]}),
    ([MULTI, q("which", {"field": "allergy", "notEquals": "Dust"})], {"allergy": []}),
    ([CONSENT, q("more", {"field": "ok", "equals": False})], {"ok": False}),
    ([CONSENT, q("more", {"field": "ok", "equals": True})], {"ok": False}),
    ([NUMBER, q("old", {"field": "age", "equals": 40})], {"age": 40.0}),
    ([NUMBER, q("old", {"field": "age", "notEquals": 40})], {"age": 41}),
    ([TEXT, q("n2", {"field": "note", "contains": "PAIN"})], {"note": "Back pain at night"}),
    ([TEXT, q("n2", {"field": "note", "contains": "pain"})], {"note": "   "}),
    ([TEXT, q("n2", {"field": "note", "equals": "x"})], {"note": "X"}),
    # A hidden field counts as unanswered for the conditions after it.
    (
        [
            RADIO,
            q("b", {"field": "smoker", "equals": "yes"}),
            q("c", {"field": "b", "notEquals": "n"}),
        ],
        {"smoker": "no", "b": "n"},
    ),
    # all / any.
    (
        [
            RADIO,
            MULTI,
            q(
                "x",
                {
                    "all": [
                        {"field": "smoker", "equals": "yes"},
                        {"field": "allergy", "contains": "Nuts"},
                    ]
                },
            ),
            q(
                "y",
                {
                    "any": [
                        {"field": "smoker", "equals": "yes"},
                        {"field": "allergy", "contains": "Nuts"},
                    ]
                },
            ),
        ],
        {"smoker": "no", "allergy": ["Nuts"]},
    ),
    # Pages: a page break's condition hides its page, blocks included.
    (
        [
            RADIO,
            {
                "id": "p2",
                "type": "pageBreak",
                "label": "Smoking",
                "showWhen": {"field": "smoker", "equals": "yes"},
            },
            {"id": "h", "type": "heading", "label": "Habits"},
            q("packs"),
            {"id": "p3", "type": "pageBreak", "label": "End"},
            q("last", {"field": "packs", "notEquals": "1"}),
        ],
        {"smoker": "no", "packs": "1"},
    ),
]


def generated(count: int, seed: int) -> list[Case]:
    """Random sound forms (validate_fields accepts them) with random answers."""
    rng = random.Random(seed)
    cases: list[Case] = []
    while len(cases) < count:
        fields: list[dict[str, Any]] = []
        for index in range(rng.randint(2, 9)):
            questions = [f for f in fields if f["type"] not in ("heading", "pageBreak")]
            kind = rng.choice(["radio", "checkbox", "consent", "number", "text", "heading", "page"])
            field: dict[str, Any]
            if kind == "radio":
                field = {"type": "radio", "options": ["a", "b", "c"]}
            elif kind == "checkbox":
                field = {"type": "checkbox", "options": ["a", "b", "c"]}
            elif kind == "consent":
                field = {"type": "checkbox"}
            elif kind == "page":
                field = {"type": "pageBreak"}
            else:
                field = {"type": kind}
            field.update(id=f"f{index}", label=f"F{index}")
            if questions and rng.random() < 0.7:
                conds = [_condition(rng, rng.choice(questions)) for _ in range(rng.randint(1, 3))]
                if len(conds) == 1 and rng.random() < 0.5:
                    field["showWhen"] = conds[0]
                else:
                    field["showWhen"] = {rng.choice(["all", "any"]): conds}
            fields.append(field)
        try:
            validate_fields(fields)
        except ValidationFailed:
            continue  # an unsound random form (e.g. an empty page) is simply not a case
        answers = {f["id"]: _answer(rng, f) for f in fields if rng.random() < 0.8}
        cases.append((fields, {k: v for k, v in answers.items() if v is not None}))
    return cases


def _condition(rng: random.Random, target: dict[str, Any]) -> dict[str, Any]:
    kind, options = target["type"], target.get("options")
    op = rng.choice(["equals", "notEquals"] + (["contains"] if kind == "text" or options else []))
    value: Any
    if options:
        value = rng.choice(options)
    elif kind == "checkbox":
        value = rng.choice([True, False])
    elif kind == "number":
        value = rng.choice([1, 2, 2.5])
    else:
        value = rng.choice(["a", "B", "ab"])
    if kind == "radio" and op == "contains":
        op = "equals"
    return {"field": target["id"], op: value}


def _answer(rng: random.Random, field: dict[str, Any]) -> Any:
    kind, options = field["type"], field.get("options") or []
    if kind in ("heading", "pageBreak"):
        return None
    if kind == "radio":
        return rng.choice(options)
    if kind == "checkbox" and options:
        return [o for o in options if rng.random() < 0.5]
    if kind == "checkbox":
        return rng.choice([True, False])
    if kind == "number":
        return rng.choice([1, 2, 2.5, 2.0])
    return rng.choice(["a", "Ab", "xaB", "", "b"])


def python_shown(cases: list[Case]) -> list[list[str]]:
    return [sorted(f.id for f in visible_fields(fields_from_json(fs), a)) for fs, a in cases]


def javascript_shown(cases: list[Case]) -> list[list[str]]:
    assert NODE is not None
    done = subprocess.run(
        [NODE, "--input-type=module", "-e", RUNNER, CONDITIONS_JS.as_uri()],
        input=json.dumps([{"fields": fs, "answers": a} for fs, a in cases]),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: list[list[str]] = json.loads(done.stdout)
    return result


needs_node = pytest.mark.skipif(
    NODE is None, reason="Node.js is not installed (.ci/run installs it, so CI never skips this)"
)


@needs_node
def test_the_table_of_cases_reads_the_same_in_python_and_javascript() -> None:
    for fields, _ in TABLE:
        validate_fields(fields)  # every case is a form an editor could save
    assert javascript_shown(TABLE) == python_shown(TABLE)
    # And the table says what the docs say (a few spot checks of the meaning itself).
    shown = python_shown(TABLE)
    assert shown[0] == ["packs", "smoker"] and shown[1] == ["smoker"]
    assert shown[4] == ["allergy", "which"] and shown[7] == ["more", "ok"]
    assert shown[11] == ["n2", "note"] and shown[14] == ["c", "smoker"]
    assert shown[15] == ["allergy", "smoker", "y"]
    assert shown[16] == ["last", "p3", "smoker"]


@needs_node
def test_generated_forms_read_the_same_in_python_and_javascript() -> None:
    cases = generated(400, seed=15)
    python = python_shown(cases)
    javascript = javascript_shown(cases)
    differing = [
        (cases[i], python[i], javascript[i])
        for i in range(len(cases))
        if python[i] != javascript[i]
    ]
    assert differing == [], differing[:3]
    # The generator exercises hiding: not every field of every case is shown.
    assert sum(len(p) for p in python) < sum(len(c[0]) for c in cases)


def test_ci_has_node() -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        assert NODE is not None, "CI must run the JavaScript twin of the conditions"
