"""The Field and form-definition shapes of API.md "Forms", shared by forms and submissions.

Definition-level validation (unique ids, options, min/max, safe patterns, showWhen
targets) lives in forms/validation.py; answer validation in submissions/validation.py.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt

FIELD_ID_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"
MAX_FIELDS = 200
MAX_LABEL = 500
MAX_HELP = 1000
MAX_OPTIONS = 100
MAX_OPTION_LEN = 200
MAX_PATTERN = 200


class FieldType(StrEnum):
    TEXT = "text"
    TEXTAREA = "textarea"
    EMAIL = "email"
    PHONE = "phone"
    NUMBER = "number"
    DATE = "date"
    SELECT = "select"
    RADIO = "radio"
    CHECKBOX = "checkbox"
    SIGNATURE = "signature"
    # Calculated by the server from other answers (forms/scores.py): no patient answer.
    SCORE = "score"


# What a field says about who the patient is (responses/patients.py): shown in the
# responses list and searchable through blind indexes.
Identifies = Literal["name", "birthDate"]


class ShowWhen(BaseModel):
    """Declarative condition: show the field only while another field's answer matches."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    field: str = Field(pattern=FIELD_ID_PATTERN)
    equals: str | int | float | bool | None = None
    not_equals: str | int | float | bool | None = Field(default=None, alias="notEquals")
    contains: str | None = None


# A number in a score definition: a JSON int or float, never a bool or a string.
ScoreNumber = StrictInt | StrictFloat
MAX_SCORE_SOURCES = MAX_FIELDS
MAX_SCORE_BANDS = 20
MAX_BAND_LABEL = 100


class ScoreTerm(BaseModel):
    """One term of a score's sum: the chosen option's number times `weight`."""

    model_config = ConfigDict(extra="forbid")

    field: str = Field(pattern=FIELD_ID_PATTERN)
    weight: ScoreNumber = 1


class ScoreBand(BaseModel):
    """A labelled range of score values, `min` and `max` both included."""

    model_config = ConfigDict(extra="forbid")

    min: ScoreNumber
    max: ScoreNumber
    label: str = Field(min_length=1, max_length=MAX_BAND_LABEL)


class ScoreDef(BaseModel):
    """A declarative calculated score (docs/scores.md): a weighted sum, never code."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    sum: list[ScoreTerm] = Field(min_length=1, max_length=MAX_SCORE_SOURCES)
    bands: list[ScoreBand] = Field(default_factory=list, max_length=MAX_SCORE_BANDS)
    show_patient: StrictBool = Field(default=False, alias="showPatient")


class FieldDef(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str = Field(pattern=FIELD_ID_PATTERN)
    type: FieldType
    label: str = Field(min_length=1, max_length=MAX_LABEL)
    required: StrictBool = False
    options: list[str] | None = Field(default=None, max_length=MAX_OPTIONS)
    min: float | None = None
    max: float | None = None
    pattern: str | None = Field(default=None, max_length=MAX_PATTERN)
    help_text: str | None = Field(default=None, alias="helpText", max_length=MAX_HELP)
    show_when: ShowWhen | None = Field(default=None, alias="showWhen")
    identifies: Identifies | None = None
    # One number per option (same order as `options`): what choosing it adds to a score.
    option_scores: list[ScoreNumber] | None = Field(
        default=None, alias="optionScores", max_length=MAX_OPTIONS
    )
    score: ScoreDef | None = None

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


def fields_to_json(fields: list[FieldDef]) -> list[dict[str, Any]]:
    return [f.to_json() for f in fields]


def fields_from_json(raw: list[dict[str, Any]]) -> list[FieldDef]:
    return [FieldDef.model_validate(item) for item in raw]
