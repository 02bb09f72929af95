"""Each definition rule answers 422 validation_error naming the offending field id."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from healthforms.forms.validation import compile_pattern
from tests.forms.helpers import text_field

CHOICE = {"id": "pick", "type": "select", "label": "Pick", "options": ["a", "b"]}

BAD_DEFINITIONS: list[tuple[str, list[dict[str, Any]], str]] = [
    ("duplicate id", [text_field("name"), text_field("name")], "name"),
    ("select without options", [{"id": "s", "type": "select", "label": "S"}], "s"),
    ("radio with empty options", [{"id": "r", "type": "radio", "label": "R", "options": []}], "r"),
    (
        "duplicate options",
        [{"id": "c", "type": "checkbox", "label": "C", "options": ["x", "x"]}],
        "c",
    ),
    ("blank option", [{"id": "s", "type": "select", "label": "S", "options": ["a", " "]}], "s"),
    ("options on text", [text_field("t", options=["a"])], "t"),
    ("min above max", [{"id": "n", "type": "number", "label": "N", "min": 5, "max": 1}], "n"),
    ("negative length", [text_field("t", min=-1)], "t"),
    ("min on a date", [{"id": "d", "type": "date", "label": "D", "min": 1}], "d"),
    ("backreference pattern", [text_field("t", pattern=r"(a)\1")], "t"),
    ("overlong pattern", [text_field("t", pattern="a" * 201)], "t"),
    ("pattern on select", [{**CHOICE, "pattern": "a"}], "pick"),
    ("unknown type", [{"id": "x", "type": "script", "label": "X"}], "x"),
    ("bad id", [{"id": "1 bad id", "type": "text", "label": "X"}], "1 bad id"),
    ("missing label", [{"id": "x", "type": "text"}], "x"),
    ("unknown key", [text_field("x", onChange="alert(1)")], "x"),
    (
        "showWhen on a later field",
        [text_field("a", showWhen={"field": "b", "equals": "y"}), text_field("b")],
        "a",
    ),
    ("showWhen on itself", [text_field("a", showWhen={"field": "a", "equals": "y"})], "a"),
    (
        "showWhen on a missing field",
        [text_field("a"), text_field("b", showWhen={"field": "zzz", "equals": "y"})],
        "b",
    ),
    (
        "showWhen with two conditions",
        [text_field("a"), text_field("b", showWhen={"field": "a", "equals": "1", "contains": "2"})],
        "b",
    ),
    (
        "showWhen with no condition",
        [text_field("a"), text_field("b", showWhen={"field": "a"})],
        "b",
    ),
    (
        "showWhen with script",
        [text_field("a"), text_field("b", showWhen={"field": "a", "expression": "1==1"})],
        "b",
    ),
]


@pytest.mark.parametrize(
    ("fields", "offender"),
    [pytest.param(f, o, id=name) for name, f, o in BAD_DEFINITIONS],
)
async def test_bad_definition_is_422_naming_the_field(
    editor_http: httpx.AsyncClient, fields: list[dict[str, Any]], offender: str
) -> None:
    created = await editor_http.post("/api/forms", json={"title": "T", "fields": fields})
    assert created.status_code == 422, created.text
    body = created.json()
    assert body["code"] == "validation_error"
    assert offender in body["fields"]
    # The same rules apply to a save.
    form = (await editor_http.post("/api/forms", json={"title": "T"})).json()
    saved = await editor_http.put(f"/api/forms/{form['id']}", json={"fields": fields})
    assert saved.status_code == 422
    assert offender in saved.json()["fields"]
    assert (await editor_http.get(f"/api/forms/{form['id']}")).json()["revision"] == 1


async def test_title_is_required_and_bounded(editor_http: httpx.AsyncClient) -> None:
    for body in ({}, {"title": ""}, {"title": "x" * 201}, {"title": 5}):
        reply = await editor_http.post("/api/forms", json=body)
        assert reply.status_code == 422
        assert "title" in reply.json()["fields"]


async def test_sound_definition_with_every_type_is_accepted(editor_http: httpx.AsyncClient) -> None:
    fields = [
        text_field("name", required=True, pattern="[A-Za-z ]+", min=2, max=80),
        {"id": "bio", "type": "textarea", "label": "Bio"},
        {"id": "email", "type": "email", "label": "Email"},
        {"id": "phone", "type": "phone", "label": "Phone"},
        {"id": "age", "type": "number", "label": "Age", "min": 0, "max": 130},
        {"id": "dob", "type": "date", "label": "Born"},
        {"id": "sex", "type": "select", "label": "Sex", "options": ["F", "M", "X"]},
        {"id": "smoker", "type": "radio", "label": "Smoker", "options": ["yes", "no"]},
        {"id": "allergies", "type": "checkbox", "label": "Allergies", "options": ["nuts", "dust"]},
        {"id": "consent", "type": "checkbox", "label": "I consent"},
        {
            "id": "packs",
            "type": "number",
            "label": "Packs",
            "showWhen": {"field": "smoker", "equals": "yes"},
        },
        {
            "id": "nutsNote",
            "type": "text",
            "label": "Which nuts",
            "showWhen": {"field": "allergies", "contains": "nuts"},
        },
        {"id": "sig", "type": "signature", "label": "Sign", "required": True},
    ]
    reply = await editor_http.post("/api/forms", json={"title": "All", "fields": fields})
    assert reply.status_code == 201, reply.text
    assert [f["id"] for f in reply.json()["fields"]] == [f["id"] for f in fields]


def test_catastrophic_backtracking_pattern_runs_in_linear_time() -> None:
    # (a+)+$ takes exponential time in a backtracking engine on this input.
    pattern = compile_pattern("(a+)+$")
    # A backtracking engine would not return before the test timeout.
    assert pattern.fullmatch("a" * 50_000 + "!") is None
    assert pattern.fullmatch("a" * 50_000) is not None
