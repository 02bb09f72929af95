"""The Field and form-definition shapes of API.md "Forms", shared by forms and submissions.

Definition-level validation (unique ids, options, min/max, safe patterns, showWhen
targets) lives in forms/validation.py; answer validation in submissions/validation.py.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

FIELD_ID_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"
MAX_FIELDS = 200
MAX_LABEL = 500
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


# What a field says about who the patient is (responses/patients.py): shown in the
# responses list and searchable through blind indexes.
Identifies = Literal["name", "birthDate"]
# What a file field takes (docs/uploads.md): photos (JPEG, PNG, WebP) and/or PDF documents.
FileKind = Literal["image", "pdf"]


class ShowWhen(BaseModel):
    """Declarative condition: show the field only while another field's answer matches."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    field: str = Field(pattern=FIELD_ID_PATTERN)
    equals: str | int | float | bool | None = None
    not_equals: str | int | float | bool | None = Field(default=None, alias="notEquals")
    contains: str | None = None


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
    # File fields only (forms/validation.py checks the ranges; docs/uploads.md).
    accept: list[FileKind] | None = Field(default=None, max_length=2)
    max_files: StrictInt | None = Field(default=None, alias="maxFiles")
    max_size_mb: StrictInt | None = Field(default=None, alias="maxSizeMb")

    def to_json(self) -> dict[str, Any]:
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
