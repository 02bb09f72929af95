"""A frozen form version as a FHIR R4 Questionnaire (docs/fhir.md has the mapping table).

Pure: a FormVersion's fields and translations in, a JSON-ready dict out. Every field
type maps to a standard item type; what a standard element cannot say exactly travels
in our own extensions (fhir/codes.py), so an export imports back to the same fields.

Conditions (forms/conditions.py semantics) become `enableWhen` only where FHIR's
operators mean exactly the same thing:
- equals V, and contains V on a multiple choice: `=` (FHIR enables a repeating item
  when any answer matches, as healthforms does);
- notEquals V on a single answer: healthforms holds when the answer is missing or
  different, so it is `exists false` OR `!= V` (enableBehavior any). That needs an OR,
  so inside an `all` group of several conditions it cannot be written;
- contains on text (a case-insensitive substring) and notEquals on a multiple choice
  ("none of the ticked is V") have no FHIR operator.
A condition that cannot be written exactly gets no enableWhen at all (never a nearby
one that means something else): the item says so in HF_NOT_EXPRESSIBLE, carries the
exact condition as SDC's enableWhenExpression (FHIRPath over the response's answers, for
SDC renderers), and its original condition rides along in HF_SHOW_WHEN.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from healthforms.clock import rfc3339
from healthforms.fhir.codes import (
    HF_FIELD_TYPE,
    HF_IDENTIFIES,
    HF_NOT_EXPRESSIBLE,
    HF_SCORE,
    HF_SHOW_WHEN,
    ITEM_CONTROL,
    ITEM_CONTROL_SYSTEM,
    MAX_OCCURS,
    MAX_SIZE,
    MAX_VALUE,
    MIME_TYPE,
    MIN_LENGTH,
    MIN_VALUE,
    ORDINAL_VALUE,
    REGEX,
    SDC_ENABLE_WHEN_EXPRESSION,
    canonical_url,
    extension,
    option_code,
    translations_ext,
)
from healthforms.forms.models import FormVersion
from healthforms.forms.schema import (
    Condition,
    FieldDef,
    FieldType,
    ShowWhen,
    fields_from_json,
)
from healthforms.forms.validation import DEFAULT_TEXT_MAX, DEFAULT_TEXTAREA_MAX

JsonObject = dict[str, Any]

# Which MIME types a file field's `accept` kinds are (images.py cleans to these).
MIME_TYPES = {"image": ("image/jpeg", "image/png", "image/webp"), "pdf": ("application/pdf",)}
CHOICE_TYPES = frozenset({FieldType.SELECT, FieldType.RADIO})


def help_link_id(field_id: str) -> str:
    """The linkId of a field's help text item ('.' is never in a field id)."""
    return f"{field_id}.help"


def is_multiple(field: FieldDef) -> bool:
    return field.type is FieldType.CHECKBOX and field.options is not None


def is_yes_no(field: FieldDef) -> bool:
    return field.type is FieldType.CHECKBOX and field.options is None


def score_is_integer(field: FieldDef, by_id: Mapping[str, FieldDef]) -> bool:
    """Whether a score can only be a whole number (every option score and weight is)."""
    assert field.score is not None
    for term in field.score.sum:
        if not float(term.weight).is_integer():
            return False
        source = by_id.get(term.field)
        if source is None or not all(float(n).is_integer() for n in source.option_scores or []):
            return False
    return True


def item_type(field: FieldDef, by_id: Mapping[str, FieldDef]) -> str:
    kind = field.type
    if kind in (FieldType.TEXT, FieldType.EMAIL, FieldType.PHONE):
        return "string"
    if kind is FieldType.TEXTAREA:
        return "text"
    if kind is FieldType.NUMBER:
        return "decimal"
    if kind is FieldType.DATE:
        return "date"
    if kind in CHOICE_TYPES:
        return "choice"
    if kind is FieldType.CHECKBOX:
        return "choice" if field.options is not None else "boolean"
    if kind in (FieldType.SIGNATURE, FieldType.FILE):
        return "attachment"
    if kind is FieldType.PAGE_BREAK:
        return "group"
    if kind is FieldType.SCORE:
        return "integer" if score_is_integer(field, by_id) else "decimal"
    return "display"  # heading, paragraph


# --- conditions -------------------------------------------------------------------


def _answer(target: FieldDef, value: object) -> JsonObject:
    """The enableWhen.answer[x] for `value` of the target's type."""
    if target.options is not None and isinstance(value, str):
        index = target.options.index(value)
        return {"answerCoding": {"code": option_code(value, index), "display": value}}
    if isinstance(value, bool):
        return {"answerBoolean": value}
    if target.type is FieldType.NUMBER:
        return {"answerDecimal": value}
    if target.type is FieldType.DATE:
        return {"answerDate": value}
    return {"answerString": value}


def _condition_parts(condition: Condition, target: FieldDef) -> tuple[list[JsonObject], str | None]:
    """The enableWhen entries that together (OR) mean exactly `condition`, or a reason
    why no FHIR operator does."""
    op, value = condition.operator, condition.value
    question = condition.field
    if op == "equals" or (op == "contains" and is_multiple(target)):
        return [{"question": question, "operator": "=", **_answer(target, value)}], None
    if op == "not_equals":
        if is_multiple(target):
            return [], (
                f"'{question} is not {value}' on a multiple choice means none of the ticked "
                "options is it; FHIR's != holds when any ticked option differs"
            )
        return [
            {"question": question, "operator": "exists", "answerBoolean": False},
            {"question": question, "operator": "!=", **_answer(target, value)},
        ], None
    return [], f"'{question} contains text' (a case-insensitive substring) has no FHIR operator"


def enable_when(
    show_when: ShowWhen, by_id: Mapping[str, FieldDef]
) -> tuple[JsonObject, str | None]:
    """{enableWhen, enableBehavior?} for a showWhen, or ({}, reason) when FHIR cannot
    express it exactly."""
    entries: list[JsonObject] = []
    ors = False
    for condition in show_when.conditions:
        target = by_id.get(condition.field)
        if target is None:  # pragma: no cover - forms/validation.py forbids it
            return {}, f"{condition.field} is not a field of this version"
        parts, reason = _condition_parts(condition, target)
        if reason is not None:
            return {}, reason
        ors = ors or len(parts) > 1
        entries.extend(parts)
    several = len(show_when.conditions) > 1
    if show_when.mode == "all" and several and ors:
        return {}, (
            "an 'all' group with a 'not equal' condition needs (missing OR different) "
            "inside an AND, which enableWhen cannot nest"
        )
    body: JsonObject = {"enableWhen": entries}
    if len(entries) > 1:
        body["enableBehavior"] = "any" if (show_when.mode == "any" or ors) else "all"
    return body, None


def _fhirpath_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fhirpath_literal(target: FieldDef, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return format(Decimal(str(value)), "f")  # FHIRPath has no exponent notation
    if target.type is FieldType.DATE:
        return f"@{value}"
    return _fhirpath_string(str(value))


def _condition_path(condition: Condition, target: FieldDef) -> str:
    """One healthforms condition as FHIRPath over the QuestionnaireResponse's answers
    (answers of disabled items are absent there, as hidden ones are from healthforms')."""
    values = (
        f"%resource.repeat(item).where(linkId = {_fhirpath_string(condition.field)}).answer.value"
    )
    op, value = condition.operator, condition.value
    if op == "contains" and not is_multiple(target):
        needle = _fhirpath_string(str(value).lower())
        return f"{values}.where($this.lower().contains({needle})).exists()"
    if target.options is not None and isinstance(value, str):
        code = option_code(value, target.options.index(value))
        match = f"{values}.where(code = {_fhirpath_string(code)})"
    else:
        match = f"{values}.where($this = {_fhirpath_literal(target, value)})"
    return f"{match}.empty()" if op == "not_equals" else f"{match}.exists()"


def enable_when_expression(show_when: ShowWhen, by_id: Mapping[str, FieldDef]) -> str | None:
    """The whole showWhen as one FHIRPath expression (None if a target is unknown)."""
    parts: list[str] = []
    for condition in show_when.conditions:
        target = by_id.get(condition.field)
        if target is None:  # pragma: no cover - forms/validation.py forbids it
            return None
        parts.append(f"({_condition_path(condition, target)})")
    return (" or " if show_when.mode == "any" else " and ").join(parts)


# --- items --------------------------------------------------------------------------


def _field_texts(translations: Mapping[str, Any], field_id: str) -> dict[str, dict[str, Any]]:
    """{lang: the field's translated texts}, skipping anything not shaped as saved."""
    found: dict[str, dict[str, Any]] = {}
    for lang, texts in translations.items():
        fields = texts.get("fields") if isinstance(texts, dict) else None
        own = fields.get(field_id) if isinstance(fields, dict) else None
        if isinstance(own, dict):
            found[lang] = own
    return found


def _texts(translations: Mapping[str, Any], field_id: str, key: str) -> dict[str, str]:
    """{lang: text} of one field's translated `key` (label or helpText); a blank one falls
    back to the form's own, as the patient page does (forms/translations.py localize)."""
    return {
        lang: own[key]
        for lang, own in _field_texts(translations, field_id).items()
        if isinstance(own.get(key), str) and own[key].strip()
    }


def _option_texts(translations: Mapping[str, Any], field: FieldDef, index: int) -> dict[str, str]:
    """{lang: label} of one option; translations whose option count no longer matches the
    field's are ignored, as the patient page ignores them."""
    found: dict[str, str] = {}
    count = len(field.options or [])
    for lang, own in _field_texts(translations, field.id).items():
        options = own.get("options")
        if isinstance(options, list) and len(options) == count:
            text = options[index]
            if isinstance(text, str) and text.strip():
                found[lang] = text
    return found


def _with_text(item: JsonObject, text: str, translated: dict[str, str]) -> None:
    item["text"] = text
    element = translations_ext(translated)
    if element is not None:
        item["_text"] = element


def _answer_options(field: FieldDef, translations: Mapping[str, Any]) -> list[JsonObject]:
    options = field.options or []
    scores = field.option_scores
    answer_options: list[JsonObject] = []
    for index, option in enumerate(options):
        coding: JsonObject = {"code": option_code(option, index), "display": option}
        element = translations_ext(_option_texts(translations, field, index))
        if element is not None:
            coding["_display"] = element
        if scores is not None:
            coding["extension"] = [extension(ORDINAL_VALUE, valueDecimal=scores[index])]
        answer_options.append({"valueCoding": coding})
    return answer_options


def _score_extension(field: FieldDef) -> JsonObject:
    assert field.score is not None
    parts: list[JsonObject] = [
        {
            "url": "term",
            "extension": [
                {"url": "linkId", "valueString": term.field},
                {"url": "weight", "valueDecimal": term.weight},
            ],
        }
        for term in field.score.sum
    ]
    parts.extend(
        {
            "url": "band",
            "extension": [
                {"url": "min", "valueDecimal": band.min},
                {"url": "max", "valueDecimal": band.max},
                {"url": "label", "valueString": band.label},
            ],
        }
        for band in field.score.bands
    )
    parts.append({"url": "showPatient", "valueBoolean": field.score.show_patient})
    return {"url": HF_SCORE, "extension": parts}


def field_item(
    field: FieldDef, by_id: Mapping[str, FieldDef], translations: Mapping[str, Any]
) -> JsonObject:
    """One field as a Questionnaire item (a page break: an empty group, filled later)."""
    item: JsonObject = {"linkId": field.id}
    _with_text(item, field.label, _texts(translations, field.id, "label"))
    item["type"] = item_type(field, by_id)
    extensions: list[JsonObject] = [extension(HF_FIELD_TYPE, valueCode=field.type.value)]
    kind = field.type
    if field.takes_answer and field.required:
        item["required"] = True
    if kind in CHOICE_TYPES or is_multiple(field):
        item["answerOption"] = _answer_options(field, translations)
        control = {FieldType.SELECT: "drop-down", FieldType.RADIO: "radio-button"}.get(
            kind, "check-box"
        )
        extensions.append(_item_control(control))
        if is_multiple(field):
            item["repeats"] = True
    if kind in (FieldType.TEXT, FieldType.TEXTAREA):
        default = DEFAULT_TEXT_MAX if kind is FieldType.TEXT else DEFAULT_TEXTAREA_MAX
        item["maxLength"] = int(field.max) if field.max is not None else default
        if field.min is not None:
            extensions.append(extension(MIN_LENGTH, valueInteger=int(field.min)))
    if kind is FieldType.NUMBER:
        if field.min is not None:
            extensions.append(extension(MIN_VALUE, valueDecimal=field.min))
        if field.max is not None:
            extensions.append(extension(MAX_VALUE, valueDecimal=field.max))
    if field.pattern is not None:
        extensions.append(extension(REGEX, valueString=field.pattern))
    if kind is FieldType.FILE:
        for file_kind in field.file_kinds:
            extensions.extend(extension(MIME_TYPE, valueCode=m) for m in MIME_TYPES[file_kind])
        extensions.append(extension(MAX_SIZE, valueDecimal=field.file_size_limit))
        if field.file_count_limit > 1:
            item["repeats"] = True
        extensions.append(extension(MAX_OCCURS, valueInteger=field.file_count_limit))
    if kind is FieldType.SIGNATURE:
        extensions.append(extension(MIME_TYPE, valueCode="image/png"))
    if kind is FieldType.SCORE:
        item["readOnly"] = True
        extensions.append(_score_extension(field))
    if field.identifies is not None:
        extensions.append(extension(HF_IDENTIFIES, valueCode=field.identifies))
    if field.show_when is not None:
        conditions, reason = enable_when(field.show_when, by_id)
        item.update(conditions)
        show_when = field.show_when.model_dump(by_alias=True, exclude_unset=True)
        extensions.append(
            extension(HF_SHOW_WHEN, valueString=json.dumps(show_when, separators=(",", ":")))
        )
        if reason is not None:
            extensions.append(extension(HF_NOT_EXPRESSIBLE, valueString=reason))
            expression = enable_when_expression(field.show_when, by_id)
            if expression is not None:
                extensions.append(
                    extension(
                        SDC_ENABLE_WHEN_EXPRESSION,
                        valueExpression={"language": "text/fhirpath", "expression": expression},
                    )
                )
    if field.help_text:
        help_item: JsonObject = {"linkId": help_link_id(field.id)}
        _with_text(help_item, field.help_text, _texts(translations, field.id, "helpText"))
        help_item["type"] = "display"
        help_item["extension"] = [_item_control("help")]
        item["item"] = [help_item]
    item["extension"] = extensions
    return item


def _item_control(code: str) -> JsonObject:
    return extension(
        ITEM_CONTROL,
        valueCodeableConcept={"coding": [{"system": ITEM_CONTROL_SYSTEM, "code": code}]},
    )


def items_of(fields: Sequence[FieldDef], translations: Mapping[str, Any]) -> list[JsonObject]:
    """The items in form order. A page break is a group holding everything up to the
    next page break (its condition hides the whole page, as forms/conditions.py does);
    fields before the first page break stay at the top level."""
    by_id = {f.id: f for f in fields}
    top: list[JsonObject] = []
    page: JsonObject | None = None
    for field in fields:
        item = field_item(field, by_id, translations)
        if field.type is FieldType.PAGE_BREAK:
            # SDC's "page" control: renderers that paginate show the group as a page.
            item["extension"].append(_item_control("page"))
            item["item"] = []
            top.append(item)
            page = item
        elif page is not None:
            page["item"].append(item)
        else:
            top.append(item)
    return top


def _form_texts(translations: Mapping[str, Any], key: str) -> dict[str, str]:
    return {
        lang: texts[key]
        for lang, texts in translations.items()
        if isinstance(texts, dict) and isinstance(texts.get(key), str) and texts[key].strip()
    }


def version_status(version: FormVersion, latest: int, form_status: str) -> str:
    """active: the version patients answer now; retired: superseded or the form is
    archived; draft: the form is unpublished (its link answers 404)."""
    if version.version != latest or form_status == "archived":
        return "retired"
    return "active" if form_status == "published" else "draft"


def questionnaire(
    version: FormVersion, *, base_url: str, status: str, language: str = "en"
) -> JsonObject:
    """The Questionnaire of one frozen version."""
    fields = fields_from_json(list(version.fields or []))
    translations: Mapping[str, Any] = version.translations or {}
    body: JsonObject = {
        "resourceType": "Questionnaire",
        "language": language,
        "url": canonical_url(base_url, version.form_id),
        "version": str(version.version),
        "title": version.title,
    }
    title_texts = _form_texts(translations, "title")
    element = translations_ext(title_texts)
    if element is not None:
        body["_title"] = element
    body["status"] = status
    body["subjectType"] = ["Patient"]
    body["date"] = rfc3339(version.published_at)
    if version.description:
        body["description"] = version.description
        element = translations_ext(_form_texts(translations, "description"))
        if element is not None:
            body["_description"] = element
    body["item"] = items_of(fields, translations)
    return body
