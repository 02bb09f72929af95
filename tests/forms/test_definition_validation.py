"""Each definition rule answers 422 validation_error naming the offending field id."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from healthforms.forms.validation import compile_pattern
from tests.forms.helpers import text_field

CHOICE = {"id": "pick", "type": "select", "label": "Pick", "options": ["a", "b"]}
PAGE = {"id": "page2", "type": "pageBreak", "label": "Page two"}

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
        "showWhen value not among the options",
        [CHOICE, text_field("b", showWhen={"field": "pick", "equals": "c"})],
        "b",
    ),
    (
        "showWhen contains on a single choice",
        [CHOICE, text_field("b", showWhen={"field": "pick", "contains": "a"})],
        "b",
    ),
    (
        "showWhen all that can never hold",
        [
            CHOICE,
            text_field(
                "b",
                showWhen={
                    "all": [{"field": "pick", "equals": "a"}, {"field": "pick", "equals": "b"}]
                },
            ),
        ],
        "b",
    ),
    (
        "showWhen all asking for and excluding a value",
        [
            CHOICE,
            text_field(
                "b",
                showWhen={
                    "all": [{"field": "pick", "equals": "a"}, {"field": "pick", "notEquals": "a"}]
                },
            ),
        ],
        "b",
    ),
    (
        "showWhen mixing one condition and a group",
        [CHOICE, text_field("b", showWhen={"field": "pick", "equals": "a", "any": []})],
        "b",
    ),
    ("showWhen any of nothing", [CHOICE, text_field("b", showWhen={"any": []})], "b"),
    (
        "showWhen on a yes/no box with text",
        [
            {"id": "ok", "type": "checkbox", "label": "OK"},
            text_field("b", showWhen={"field": "ok", "equals": "yes"}),
        ],
        "b",
    ),
    (
        "showWhen on a number with text",
        [
            {"id": "n", "type": "number", "label": "N"},
            text_field("b", showWhen={"field": "n", "equals": "5"}),
        ],
        "b",
    ),
    (
        "showWhen outside a number's range",
        [
            {"id": "n", "type": "number", "label": "N", "min": 0, "max": 10},
            text_field("b", showWhen={"field": "n", "equals": 11}),
        ],
        "b",
    ),
    (
        "showWhen on a date with a non-date",
        [
            {"id": "d", "type": "date", "label": "D"},
            text_field("b", showWhen={"field": "d", "equals": "yesterday"}),
        ],
        "b",
    ),
    (
        "showWhen on a signature",
        [
            {"id": "s", "type": "signature", "label": "S"},
            text_field("b", showWhen={"field": "s", "notEquals": "x"}),
        ],
        "b",
    ),
    (
        "showWhen on a heading",
        [
            {"id": "h", "type": "heading", "label": "About you"},
            text_field("b", showWhen={"field": "h", "equals": "x"}),
        ],
        "b",
    ),
    (
        "eleven conditions",
        [CHOICE, text_field("b", showWhen={"any": [{"field": "pick", "equals": "a"}] * 11})],
        "b",
    ),
    ("required heading", [{"id": "h", "type": "heading", "label": "H", "required": True}], "h"),
    (
        "options on a paragraph",
        [{"id": "p", "type": "paragraph", "label": "P", "options": ["a"]}],
        "p",
    ),
    (
        "helpText on a page break",
        [text_field("a"), {**PAGE, "helpText": "x"}, text_field("b")],
        "page2",
    ),
    ("page break at the end", [text_field("a"), PAGE], "page2"),
    (
        "two page breaks in a row",
        [text_field("a"), PAGE, {**PAGE, "id": "p3"}, text_field("b")],
        "page2",
    ),
    ("a 501-character heading", [{"id": "h", "type": "heading", "label": "x" * 501}], "h"),
    ("a 5001-character paragraph", [{"id": "p", "type": "paragraph", "label": "x" * 5001}], "p"),
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
        {
            "id": "history",
            "type": "pageBreak",
            "label": "History",
            "showWhen": {"field": "consent", "equals": True},
        },
        {"id": "intro", "type": "heading", "label": "Your history"},
        {"id": "consentText", "type": "paragraph", "label": "I agree that " + "x" * 4900},
        {
            "id": "smokeDetail",
            "type": "textarea",
            "label": "Tell us more",
            "showWhen": {
                "any": [
                    {"field": "smoker", "equals": "yes"},
                    {"field": "allergies", "contains": "dust"},
                    {"field": "age", "equals": 40},
                    {"field": "dob", "notEquals": "2000-01-01"},
                    {"field": "name", "contains": "smith"},
                ]
            },
        },
        {
            "id": "both",
            "type": "text",
            "label": "Both",
            "showWhen": {
                "all": [
                    {"field": "allergies", "equals": "nuts"},
                    {"field": "allergies", "equals": "dust"},
                    {"field": "sex", "notEquals": "X"},
                ]
            },
        },
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
