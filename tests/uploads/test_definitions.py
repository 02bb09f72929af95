"""A file field's options, checked when a form is saved."""

from __future__ import annotations

from typing import Any

import pytest

from healthforms.errors import ValidationFailed
from healthforms.forms.validation import validate_fields


def file_field(**options: Any) -> list[dict[str, Any]]:
    return [{"id": "card", "type": "file", "label": "Insurance card", **options}]


def test_defaults_take_one_photo_or_pdf_of_up_to_10_mb() -> None:
    (field,) = validate_fields(file_field())
    assert field.file_kinds == ("image", "pdf")
    assert field.file_count_limit == 1
    assert field.file_size_limit == 10 * 1024 * 1024
    (field,) = validate_fields(file_field(accept=["pdf", "image"], maxFiles=10, maxSizeMb=20))
    assert field.file_kinds == ("image", "pdf") and field.file_count_limit == 10
    assert field.to_json()["maxSizeMb"] == 20


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"accept": []}, 'accept must list "image", "pdf" or both, once each'),
        ({"accept": ["image", "image"]}, 'accept must list "image", "pdf" or both, once each'),
        ({"maxFiles": 0}, "maxFiles must be a whole number from 1 to 10"),
        ({"maxFiles": 11}, "maxFiles must be a whole number from 1 to 10"),
        ({"maxSizeMb": 0}, "maxSizeMb must be a whole number of megabytes from 1 to 20"),
        ({"maxSizeMb": 21}, "maxSizeMb must be a whole number of megabytes from 1 to 20"),
    ],
)
def test_out_of_range_options_are_refused_with_a_clear_message(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationFailed) as refused:
        validate_fields(file_field(**options))
    assert refused.value.extra["fields"] == {"card": message}


@pytest.mark.parametrize(
    "options", [{"accept": ["gif"]}, {"maxFiles": "2"}, {"maxFiles": True}, {"maxSizeMb": 1.5}]
)
def test_options_of_the_wrong_type_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValidationFailed) as refused:
        validate_fields(file_field(**options))
    assert set(refused.value.extra["fields"]) == {"card"}


def test_file_options_belong_to_file_fields_only() -> None:
    with pytest.raises(ValidationFailed) as refused:
        validate_fields([{"id": "n", "type": "text", "label": "Name", "maxFiles": 2}])
    assert refused.value.extra["fields"] == {
        "n": "accept, maxFiles and maxSizeMb are only allowed for file fields"
    }
