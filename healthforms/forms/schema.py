"""The Field and form-definition shapes of API.md "Forms", shared by forms and submissions.

Definition-level validation (unique ids, options, min/max, safe patterns, showWhen
targets) lives in forms/validation.py; answer validation in submissions/validation.py.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt

FIELD_ID_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"
MAX_FIELDS = 200
MAX_LABEL = 500
# A paragraph block's text (consent wording, instructions) is its label.
MAX_PARAGRAPH = 5000
MAX_CONDITIONS = 10
MAX_HELP = 1000
MAX_OPTIONS = 100
MAX_OPTION_LEN = 200
MAX_PATTERN = 200
# File fields (docs/uploads.md): how many files one field takes and how large each may be.
FILE_KINDS: tuple[str, ...] = ("image", "pdf")
MAX_FILES_RANGE = (1, 10)
MAX_SIZE_MB_RANGE = (1, 20)
DEFAULT_MAX_FILES = 1
DEFAULT_MAX_SIZE_MB = 10


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
    FILE = "file"
    # Layout blocks: shown to the patient, never answered (docs/forms.md "Layout").
    HEADING = "heading"
    PARAGRAPH = "paragraph"
    PAGE_BREAK = "pageBreak"
    # Calculated by the server from other answers (forms/scores.py): no patient answer.
    SCORE = "score"


LAYOUT_TYPES = frozenset({FieldType.HEADING, FieldType.PARAGRAPH, FieldType.PAGE_BREAK})


# What a field says about who the patient is (responses/patients.py): shown in the
# responses list and searchable through blind indexes.
Identifies = Literal["name", "birthDate"]
# What a file field takes (docs/uploads.md): photos (JPEG, PNG, WebP) and/or PDF documents.
FileKind = Literal["image", "pdf"]


ConditionValue = str | int | float | bool


class Condition(BaseModel):
    """One test of an earlier field's answer: exactly one of equals, notEquals, contains.

    Declarative only: forms/conditions.py (and static/js/conditions.js, its twin in
    the browser) evaluate it; nothing in a form is ever run as code.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    field: str = Field(pattern=FIELD_ID_PATTERN)
    equals: ConditionValue | None = None
    not_equals: ConditionValue | None = Field(default=None, alias="notEquals")
    contains: str | None = None

    @property
    def operator(self) -> str | None:
        """The one test given ("equals", "not_equals", "contains"), None if not one."""
        given = self.model_fields_set & {"equals", "not_equals", "contains"}
        return next(iter(given)) if len(given) == 1 else None

    @property
    def value(self) -> ConditionValue | None:
        op = self.operator
        return None if op is None else getattr(self, op)


class ShowWhen(BaseModel):
    """When a field, block or page is shown: one condition, or `all`/`any` of several.

    The single form `{"field", "equals"|"notEquals"|"contains"}` is API.md's original
    shape; `{"all": [...]}` and `{"any": [...]}` group up to MAX_CONDITIONS of them.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    field: str | None = Field(default=None, pattern=FIELD_ID_PATTERN)
    equals: ConditionValue | None = None
    not_equals: ConditionValue | None = Field(default=None, alias="notEquals")
    contains: str | None = None
    all_of: list[Condition] | None = Field(default=None, alias="all", max_length=MAX_CONDITIONS)
    any_of: list[Condition] | None = Field(default=None, alias="any", max_length=MAX_CONDITIONS)

    @property
    def mode(self) -> str:
        """ "all" or "any" for a group; "one" for the single form."""
        if self.all_of is not None:
            return "all"
        if self.any_of is not None:
            return "any"
        return "one"

    @cached_property
    def conditions(self) -> list[Condition]:
        """The conditions to test (the single form as a list of one)."""
        if self.all_of is not None:
            return self.all_of
        if self.any_of is not None:
            return self.any_of
        single = Condition.model_validate(
            self.model_dump(by_alias=True, exclude_unset=True, exclude={"all_of", "any_of"})
        )
        return [single]


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
    # At most MAX_LABEL, except a paragraph's (MAX_PARAGRAPH): forms/validation.py.
    label: str = Field(min_length=1, max_length=MAX_PARAGRAPH)
    required: StrictBool = False
    options: list[str] | None = Field(default=None, max_length=MAX_OPTIONS)
    min: float | None = None
    max: float | None = None
    pattern: str | None = Field(default=None, max_length=MAX_PATTERN)
    help_text: str | None = Field(default=None, alias="helpText", max_length=MAX_HELP)
    show_when: ShowWhen | None = Field(default=None, alias="showWhen")
    identifies: Identifies | None = None
    # File fields only (forms/validation.py checks the ranges; docs/uploads.md).
    accept: list[FileKind] | None = Field(default=None, max_length=2)
    max_files: StrictInt | None = Field(default=None, alias="maxFiles")
    max_size_mb: StrictInt | None = Field(default=None, alias="maxSizeMb")
    # One number per option (same order as `options`): what choosing it adds to a score.
    option_scores: list[ScoreNumber] | None = Field(
        default=None, alias="optionScores", max_length=MAX_OPTIONS
    )
    score: ScoreDef | None = None

    @property
    def takes_answer(self) -> bool:
        """False for layout blocks (heading, paragraph, page break) and scores (the
        server calculates them: forms/scores.py)."""
        return self.type not in LAYOUT_TYPES and self.type is not FieldType.SCORE

    def to_json(self) -> dict[str, Any]:
        if not self.takes_answer:  # a block is never "required"
            return self.model_dump(by_alias=True, exclude_none=True, exclude={"required"})
        return self.model_dump(by_alias=True, exclude_none=True)

    @property
    def file_kinds(self) -> tuple[str, ...]:
        """A file field's accepted kinds ("image", "pdf"), both by default."""
        return tuple(k for k in FILE_KINDS if k in self.accept) if self.accept else FILE_KINDS

    @property
    def file_count_limit(self) -> int:
        return self.max_files if self.max_files is not None else DEFAULT_MAX_FILES

    @property
    def file_size_limit(self) -> int:
        """Bytes one file of this field may have (maxSizeMb MiB)."""
        mb = self.max_size_mb if self.max_size_mb is not None else DEFAULT_MAX_SIZE_MB
        return mb * 1024 * 1024


def fields_to_json(fields: list[FieldDef]) -> list[dict[str, Any]]:
    return [f.to_json() for f in fields]


def fields_from_json(raw: list[dict[str, Any]]) -> list[FieldDef]:
    return [FieldDef.model_validate(item) for item in raw]
