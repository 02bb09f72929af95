"""A form's texts in other languages: the `translations` property of API.md's Form.

    "translations": {"es": {"title": "...", "description": "...",
                            "fields": {"<fieldId>": {"label": "...", "helpText": "...",
                                                     "options": ["...", ...]}}}}

Only the words change with the language: an option is still answered, stored, exported
and compared by `showWhen` as its canonical (default-language) value; `options` here are
the labels shown for them, one per option, in the same order. A text left empty (or
missing) falls back to the form's own. Saved translations are checked against the
fields they are saved with; a later edit of the fields that no longer matches them
(an option added, a field removed) is ignored when the form is shown, never an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from healthforms.errors import ValidationFailed
from healthforms.forms.schema import (
    MAX_HELP,
    MAX_LABEL,
    MAX_OPTION_LEN,
    MAX_PARAGRAPH,
    FieldDef,
    FieldType,
)
from healthforms.forms.validation import MAX_DESCRIPTION, MAX_TITLE
from healthforms.languages import DEFAULT_LANGUAGE, SUPPORTED_LANGUAGES

TRANSLATABLE_LANGUAGES = tuple(code for code in SUPPORTED_LANGUAGES if code != DEFAULT_LANGUAGE)
_FORM_KEYS = frozenset({"title", "description", "fields"})
_FIELD_KEYS = frozenset({"label", "helpText", "options"})


def _text(value: object, limit: int, where: str) -> str | None:
    """A translated text, None when left empty; ValidationFailed at `where` otherwise."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationFailed({where: "must be text"})
    if len(value) > limit:
        raise ValidationFailed({where: f"at most {limit} characters"})
    return value if value.strip() else None


def _field(raw: object, field: FieldDef, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ValidationFailed({where: "must be an object"})
    unknown = sorted(set(raw) - _FIELD_KEYS)
    if unknown:
        raise ValidationFailed({where: f"unknown key {str(unknown[0])[:40]}"})
    cleaned: dict[str, Any] = {}
    # A paragraph's text is its label, up to MAX_PARAGRAPH (forms/schema.py).
    limit = MAX_PARAGRAPH if field.type is FieldType.PARAGRAPH else MAX_LABEL
    label = _text(raw.get("label"), limit, f"{where}.label")
    if label is not None:
        cleaned["label"] = label
    help_text = _text(raw.get("helpText"), MAX_HELP, f"{where}.helpText")
    if help_text is not None:
        cleaned["helpText"] = help_text
    options = raw.get("options")
    if options is not None:
        here = f"{where}.options"
        if not field.options:
            raise ValidationFailed({here: "this field has no options"})
        if not isinstance(options, list) or len(options) != len(field.options):
            raise ValidationFailed(
                {here: f"must be a list of {len(field.options)} texts, one per option"}
            )
        texts = [_text(option, MAX_OPTION_LEN, here) or "" for option in options]
        if any(texts):
            cleaned["options"] = texts
    return cleaned


def _language(raw: object, fields: Mapping[str, FieldDef], where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ValidationFailed({where: "must be an object"})
    unknown = sorted(set(raw) - _FORM_KEYS)
    if unknown:
        raise ValidationFailed({where: f"unknown key {str(unknown[0])[:40]}"})
    cleaned: dict[str, Any] = {}
    title = _text(raw.get("title"), MAX_TITLE, f"{where}.title")
    if title is not None:
        cleaned["title"] = title.strip()
    description = _text(raw.get("description"), MAX_DESCRIPTION, f"{where}.description")
    if description is not None:
        cleaned["description"] = description
    raw_fields = raw.get("fields")
    if raw_fields is not None:
        if not isinstance(raw_fields, dict):
            raise ValidationFailed({f"{where}.fields": "must be an object keyed by field id"})
        texts: dict[str, Any] = {}
        for field_id, value in raw_fields.items():
            here = f"{where}.fields.{str(field_id)[:64]}"
            field = fields.get(field_id)
            if field is None:
                raise ValidationFailed({here: "unknown field id"})
            cleaned_field = _field(value, field, here)
            if cleaned_field:
                texts[field_id] = cleaned_field
        if texts:
            cleaned["fields"] = texts
    return cleaned


def validate_translations(raw: object, fields: list[FieldDef]) -> dict[str, Any]:
    """The translations to store (empty texts dropped), checked against `fields`: known
    languages other than the default, known field ids, one text per option, bounded
    lengths. ValidationFailed keyed by the path of the first problem."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValidationFailed({"translations": "must be an object keyed by language"})
    by_id = {field.id: field for field in fields}
    cleaned: dict[str, Any] = {}
    for language, value in raw.items():
        if language not in TRANSLATABLE_LANGUAGES:
            supported = ", ".join(TRANSLATABLE_LANGUAGES)
            raise ValidationFailed(
                {f"translations.{str(language)[:16]}": f"unsupported language (use {supported})"}
            )
        texts = _language(value, by_id, f"translations.{language}")
        if texts:
            cleaned[language] = texts
    return cleaned


@dataclass(frozen=True, slots=True)
class LocalizedForm:
    """A form's texts in one language, over its canonical fields."""

    language: str
    title: str
    description: str
    # The field definitions with `label`/`helpText` in the language, plus
    # `optionLabels` (one per option) when its options are translated.
    fields: list[dict[str, Any]]
    # The language the title and description are really in (the default language when
    # they fell back): their `lang` attribute on the page.
    title_language: str = DEFAULT_LANGUAGE
    description_language: str = DEFAULT_LANGUAGE

    def option_labels(self) -> dict[str, dict[str, str]]:
        """field id -> canonical option -> its label in this language."""
        labels: dict[str, dict[str, str]] = {}
        for field in self.fields:
            shown = field.get("optionLabels")
            if shown:
                labels[str(field.get("id"))] = dict(zip(field["options"], shown, strict=True))
        return labels


def localize(
    title: str,
    description: str,
    raw_fields: list[dict[str, Any]],
    translations: Mapping[str, Any] | None,
    language: str,
) -> LocalizedForm:
    """The form as a patient reading `language` sees it. Texts without a translation
    (and translations that no longer match the fields) keep the form's own."""
    texts = (translations or {}).get(language) if language != DEFAULT_LANGUAGE else None
    if not isinstance(texts, dict):
        return LocalizedForm(language, title, description, [dict(f) for f in raw_fields])
    by_field = texts.get("fields") if isinstance(texts.get("fields"), dict) else {}
    fields: list[dict[str, Any]] = []
    for raw in raw_fields:
        field = dict(raw)
        own = by_field.get(field.get("id")) if isinstance(by_field, dict) else None
        if isinstance(own, dict):
            if isinstance(own.get("label"), str) and own["label"].strip():
                field["label"] = own["label"]
            if isinstance(own.get("helpText"), str) and own["helpText"].strip():
                field["helpText"] = own["helpText"]
            options, shown = field.get("options"), own.get("options")
            if isinstance(options, list) and isinstance(shown, list):
                if len(options) == len(shown):
                    field["optionLabels"] = [
                        text if isinstance(text, str) and text.strip() else str(option)
                        for option, text in zip(options, shown, strict=True)
                    ]
        fields.append(field)
    own_title = texts.get("title")
    own_description = texts.get("description")
    has_title = isinstance(own_title, str) and bool(own_title.strip())
    has_description = isinstance(own_description, str) and bool(own_description.strip())
    return LocalizedForm(
        language=language,
        title=str(own_title) if has_title else title,
        description=str(own_description) if has_description else description,
        fields=fields,
        title_language=language if has_title else DEFAULT_LANGUAGE,
        description_language=language if has_description else DEFAULT_LANGUAGE,
    )
