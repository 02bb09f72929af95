"""The export's table on its own: columns across versions, cells, formula injection."""

from __future__ import annotations

from typing import Any

import pytest

from healthforms.exports.table import (
    answer_cell,
    signature_cell,
    spreadsheet_text,
    table_of,
)
from healthforms.forms.models import FormVersion


def version(number: int, fields: list[Any]) -> FormVersion:
    return FormVersion(form_id="frm_x", version=number, title="T", description="", fields=fields)


@pytest.mark.parametrize("text", ["=1+1", "+1", "-1", "@A1", "\tx", "\rx"])
def test_text_that_would_start_a_formula_gains_a_leading_quote(text: str) -> None:
    assert spreadsheet_text(text) == "'" + text


@pytest.mark.parametrize("text", ["", "Ada", "1+1", " =1", "'=1", "a=b", "\n=1", "x-1"])
def test_other_text_is_left_as_it_is(text: str) -> None:
    assert spreadsheet_text(text) == text


def test_columns_are_every_versions_fields_in_first_seen_order_with_the_latest_label() -> None:
    table = table_of(
        [
            # Given out of order: the versions' numbers decide.
            version(
                2,
                [
                    {"id": "b", "type": "text", "label": "Bee, renamed"},
                    {"id": "c", "type": "number", "label": "Sea"},
                    {"id": "a", "type": "text", "label": "Name"},
                ],
            ),
            version(
                1,
                [
                    {"id": "a", "type": "text", "label": "Name"},
                    {"id": "b", "type": "text", "label": "Bee"},
                    {"id": "gone", "type": "text", "label": "Name"},  # same label as `a`
                ],
            ),
            version(3, [{"id": "a", "type": "text", "label": ""}, {"label": "no id"}, "junk"]),
        ]
    )
    assert [c.header for c in table.columns] == [
        "a (a)",  # version 3 left `a` without a label: its id stands in
        "Bee, renamed (b)",
        "Name (gone)",
        "Sea (c)",
    ]


@pytest.mark.parametrize(
    ("answer", "cell"),
    [
        (None, ""),
        (True, "Yes"),
        (False, "No"),
        (7, 7),
        (2.5, 2.5),
        (float("nan"), ""),
        (["Latex", "Pollen"], "Latex; Pollen"),
        ([], ""),
        (["=cmd", "x"], "'=cmd; x"),
        ("Zoë", "Zoë"),
        ("-3", "'-3"),  # text, not a number: quoted
        ({"b": 1, "a": "x"}, '{"a": "x", "b": 1}'),
    ],
)
def test_answers_become_cells(answer: Any, cell: Any) -> None:
    assert answer_cell(answer) == cell


def test_a_signature_is_its_time_never_its_image() -> None:
    image = "data:image/png;base64,iVBORw0KGgo="
    assert signature_cell(image, {"signedAt": "2026-11-25T19:54:37Z"}) == (
        "signed at 2026-11-25T19:54:37Z"
    )
    assert signature_cell(image, None) == "signed"
    assert signature_cell(image, {"signedAt": "=1+1"}) == "signed at =1+1"
    assert signature_cell(None, {"signedAt": "2026-11-25T19:54:37Z"}) == ""
    assert signature_cell("", None) == ""
