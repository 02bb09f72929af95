"""A FHIR Questionnaire in, a draft form out (POST /api/forms/import-fhir, docs/fhir.md).

The input is hostile until proven otherwise: its shape is bounded first (depth, size),
then validated with the fhir.resources models (R4B, structurally R4's Questionnaire),
and only a valid resource is mapped. Mapping never guesses silently: every item or
feature that does not become part of the form is listed in `unsupported` (linkId,
what, why), and every one imported with a change (a renamed linkId, a code not kept,
an assumed score) in `notes`.

An export of ours carries our extensions (fhir/codes.py HF_*), which make the import
exact: export -> import -> export gives the same items.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from fhir.resources.R4B.questionnaire import Questionnaire
from pydantic import ValidationError

from healthforms.errors import ValidationFailed
from healthforms.fhir.codes import (
    HF_FIELD_TYPE,
    HF_IDENTIFIES,
    HF_NOT_EXPRESSIBLE,
    HF_SCORE,
    HF_SHOW_WHEN,
    ITEM_CONTROL,
    ITEM_WEIGHT,
    MAX_OCCURS,
    MAX_SIZE,
    MAX_VALUE,
    MIME_TYPE,
    MIN_LENGTH,
    MIN_VALUE,
    ORDINAL_VALUE,
    REGEX,
    SDC_ENABLE_WHEN_EXPRESSION,
    ext_values,
    first_value,
    read_translations,
)
from healthforms.fhir.questionnaire import MIME_TYPES
from healthforms.forms.schema import (
    DEFAULT_MAX_FILES,
    DEFAULT_MAX_SIZE_MB,
    FIELD_ID_PATTERN,
    FILE_KINDS,
    MAX_CONDITIONS,
    MAX_FIELDS,
    MAX_FILES_RANGE,
    MAX_HELP,
    MAX_LABEL,
    MAX_OPTION_LEN,
    MAX_OPTIONS,
    MAX_PARAGRAPH,
    MAX_SIZE_MB_RANGE,
    FieldDef,
)
from healthforms.forms.translations import TRANSLATABLE_LANGUAGES, validate_translations
from healthforms.forms.validation import (
    DEFAULT_TEXT_MAX,
    DEFAULT_TEXTAREA_MAX,
    MAX_DESCRIPTION,
    MAX_TITLE,
    UnsafePattern,
    compile_pattern,
    validate_fields,
)

JsonObject = dict[str, Any]

# Bounds on the input before any model sees it: the JSON tree's depth and node count.
MAX_DEPTH = 64
MAX_NODES = 50_000
# Items considered at most (questions, groups, display), well past MAX_FIELDS.
MAX_ITEMS = 1000
STATUSES = frozenset({"draft", "active", "retired", "unknown"})
OLD_ORDINAL = "http://hl7.org/fhir/StructureDefinition/questionnaire-ordinalValue"
_FIELD_ID = re.compile(FIELD_ID_PATTERN)
_KNOWN_ITEM_EXTENSIONS = frozenset(
    {
        HF_FIELD_TYPE,
        HF_IDENTIFIES,
        HF_NOT_EXPRESSIBLE,
        HF_SCORE,
        HF_SHOW_WHEN,
        ITEM_CONTROL,
        MAX_OCCURS,
        MAX_SIZE,
        MAX_VALUE,
        MIME_TYPE,
        MIN_LENGTH,
        MIN_VALUE,
        REGEX,
        SDC_ENABLE_WHEN_EXPRESSION,
    }
)
# Metadata that describes the resource rather than the form: not kept, said once.
_METADATA = (
    "id",
    "meta",
    "implicitRules",
    "text",
    "contained",
    "identifier",
    "url",
    "version",
    "name",
    "derivedFrom",
    "status",
    "experimental",
    "subjectType",
    "date",
    "publisher",
    "contact",
    "useContext",
    "jurisdiction",
    "purpose",
    "copyright",
    "approvalDate",
    "lastReviewDate",
    "effectivePeriod",
    "code",
)


@dataclass(frozen=True, slots=True)
class Finding:
    link_id: str | None
    what: str
    why: str

    def as_json(self) -> JsonObject:
        return {"linkId": self.link_id, "what": self.what, "why": self.why}


@dataclass(slots=True)
class Imported:
    title: str
    description: str
    fields: list[FieldDef]
    translations: dict[str, Any]
    unsupported: list[Finding] = field(default_factory=list)
    notes: list[Finding] = field(default_factory=list)


def _invalid(message: str) -> ValidationFailed:
    return ValidationFailed({"questionnaire": message}, "The Questionnaire is not valid.")


def check_shape(raw: object) -> JsonObject:
    """Refuse anything too deep or too large before a model walks it (iteratively: no
    recursion a hostile body could exhaust)."""
    if not isinstance(raw, dict):
        raise _invalid("must be a JSON object (a FHIR Questionnaire resource)")
    stack: list[tuple[object, int]] = [(raw, 1)]
    nodes = 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise _invalid(f"too large: at most {MAX_NODES} JSON values")
        if depth > MAX_DEPTH:
            raise _invalid(f"nested too deeply: at most {MAX_DEPTH} levels")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return raw


def _error_text(exc: ValidationError) -> str:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ()))[:200]
    message = str(first.get("msg", "invalid")).split("\n")[0][:200]
    return f"{loc}: {message}" if loc else message


def validate_questionnaire(raw: object) -> JsonObject:
    """The body as a valid FHIR Questionnaire (422 in API.md's shape otherwise)."""
    data = check_shape(raw)
    if data.get("resourceType") != "Questionnaire":
        raise _invalid('resourceType must be "Questionnaire"')
    status = data.get("status")
    if not isinstance(status, str) or status not in STATUSES:
        raise _invalid("status must be one of draft, active, retired, unknown")
    try:
        Questionnaire.model_validate(data)
    except ValidationError as exc:
        raise _invalid(_error_text(exc)) from None
    except (ValueError, TypeError, LookupError, AttributeError, RecursionError):
        # fhir.resources raises KeyError for a contained resource of an unknown type.
        raise _invalid("not a valid FHIR Questionnaire") from None
    return data


# --- items ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Choice:
    options: list[str]
    by_code: dict[str, str]
    scores: list[float] | None
    translated: dict[str, list[str]]


@dataclass(slots=True)
class _Pending:
    """A field being built, with what its condition needs once every id is known."""

    raw: JsonObject
    link_id: str
    enable_when: list[JsonObject] = field(default_factory=list)
    behavior: str | None = None
    show_when_ext: str | None = None
    score_ext: JsonObject | None = None


class _Mapper:
    def __init__(self) -> None:
        self.unsupported: list[Finding] = []
        self.notes: list[Finding] = []
        self.pending: list[_Pending] = []
        self.ids: dict[str, str] = {}  # linkId -> field id
        self.choices: dict[str, _Choice] = {}  # field id -> its options
        self.translations: dict[str, dict[str, Any]] = {}
        self.items_seen = 0
        self.page_has_condition = False
        self._used: set[str] = set()

    def drop(self, link_id: str | None, what: str, why: str) -> None:
        self.unsupported.append(Finding(link_id, what, why))

    def note(self, link_id: str | None, what: str, why: str) -> None:
        self.notes.append(Finding(link_id, what, why))

    def field_id(self, link_id: str) -> str:
        candidate = link_id if _FIELD_ID.match(link_id) else re.sub(r"[^A-Za-z0-9_-]", "_", link_id)
        if not candidate or not candidate[0].isalpha():
            candidate = f"q{candidate}"
        candidate = candidate[:64]
        base, n = candidate, 1
        while candidate in self._used:
            n += 1
            suffix = f"_{n}"
            candidate = base[: 64 - len(suffix)] + suffix
        self._used.add(candidate)
        self.ids[link_id] = candidate
        if candidate != link_id:
            self.note(
                link_id,
                "linkId",
                f"imported as field id {candidate} (ids are letters, digits, _ and -)",
            )
        return candidate

    def _translate(self, field_id: str, key: str, texts: dict[str, str]) -> None:
        for lang, text in texts.items():
            if lang not in TRANSLATABLE_LANGUAGES:
                self.note(
                    field_id, f"{key} in {lang[:20]}", "a language the service does not speak"
                )
                continue
            fields = self.translations.setdefault(lang, {}).setdefault("fields", {})
            fields.setdefault(field_id, {})[key] = text

    def _label(self, item: JsonObject, link_id: str, limit: int) -> str:
        text = item.get("text")
        prefix = item.get("prefix")
        if not isinstance(text, str) or not text.strip():
            self.note(link_id, "text", "the item has no text: its linkId is the label")
            text = link_id
        if isinstance(prefix, str) and prefix.strip():
            text = f"{prefix.strip()} {text}"
            self.note(link_id, "prefix", "joined to the label")
        if len(text) > limit:
            self.note(link_id, "text", f"cut to {limit} characters")
            text = text[:limit]
        return text

    def _unknown_parts(self, item: JsonObject, link_id: str) -> bool:
        """List what an item holds that no field keeps; False when it must be dropped."""
        if item.get("modifierExtension"):
            self.drop(
                link_id,
                "modifierExtension",
                "changes the item's meaning in a way the service cannot honour",
            )
            return False
        for ext in item.get("extension") or []:
            url = ext.get("url") if isinstance(ext, dict) else None
            if url not in _KNOWN_ITEM_EXTENSIONS:
                self.drop(link_id, f"extension {str(url)[:200]}", "not supported: ignored")
        if item.get("initial"):
            self.drop(link_id, "initial", "initial answers are not supported")
        if item.get("code"):
            self.note(link_id, "code", "item codes are not kept")
        if item.get("definition"):
            self.note(link_id, "definition", "not kept")
        return True

    def walk(self, items: list[JsonObject], *, top: bool) -> None:
        for item in items:
            self.items_seen += 1
            if self.items_seen > MAX_ITEMS:
                raise _invalid(f"too many items: at most {MAX_ITEMS}")
            self.item(item, top=top)

    def item(self, item: JsonObject, *, top: bool) -> None:
        link_id = str(item.get("linkId"))
        kind = item.get("type")
        if not self._unknown_parts(item, link_id):
            return
        if kind == "group":
            self.group(item, link_id, top=top)
            return
        if kind == "display":
            self.display(item, link_id, top=top)
            return
        if top and self.page_has_condition:
            # A page of ours runs to the next page break: start one without a condition,
            # so the group's condition does not hide this item.
            self._page_break({"linkId": f"page-{len(self.pending) + 1}", "text": " "}, None)
            self.note(link_id, "page", "a new page starts here (items after a conditional group)")
            self.page_has_condition = False
        built = self.question(item, link_id, str(kind))
        children = [c for c in item.get("item") or [] if isinstance(c, dict)]
        helps = [c for c in children if _is_help(c)]
        if built is not None and helps:
            help_text = self._label(helps[0], str(helps[0].get("linkId")), MAX_HELP)
            built.raw["helpText"] = help_text
            self._translate(built.raw["id"], "helpText", read_translations(helps[0].get("_text")))
        others = [c for c in children if not _is_help(c)]
        if others:
            self.note(link_id, "item", "items nested under a question follow it on the form")
            self.walk(others, top=False)

    def _page_break(self, item: JsonObject, link_id: str | None) -> _Pending:
        lid = link_id or str(item["linkId"])
        field_id = self.field_id(lid)
        label = item.get("text") if isinstance(item.get("text"), str) else None
        pending = _Pending(
            {"id": field_id, "type": "pageBreak", "label": (label or "Page")[:MAX_LABEL]}, lid
        )
        self.pending.append(pending)
        return pending

    def group(self, item: JsonObject, link_id: str, *, top: bool) -> None:
        children = [c for c in item.get("item") or [] if isinstance(c, dict)]
        if top:
            pending = self._page_break(item, link_id)
            self._translate(pending.raw["id"], "label", read_translations(item.get("_text")))
            self._conditions(pending, item)
            self.page_has_condition = bool(pending.enable_when or pending.show_when_ext)
            if item.get("repeats"):
                self.drop(
                    link_id,
                    "repeats",
                    "a repeating group is not supported: its items are asked once",
                )
            before = len(self.pending)
            self.walk(children, top=False)
            if len(self.pending) == before:
                self.pending.remove(pending)
                self.drop(link_id, "group", "none of its items could be imported")
            return
        # A group inside a page: its heading, then its items.
        field_id = self.field_id(link_id)
        label = self._label(item, link_id, MAX_LABEL)
        self.pending.append(_Pending({"id": field_id, "type": "heading", "label": label}, link_id))
        self._translate(field_id, "label", read_translations(item.get("_text")))
        self.note(link_id, "group", "a group inside a page becomes a heading followed by its items")
        if item.get("enableWhen"):
            self.drop(
                link_id, "enableWhen", "a nested group's condition is not carried to its items"
            )
        self.walk(children, top=False)

    def display(self, item: JsonObject, link_id: str, *, top: bool) -> None:
        if _is_help(item):
            self.drop(link_id, "help", "help text outside a question has no field to attach to")
            return
        heading = first_value(item, HF_FIELD_TYPE, "valueCode") == "heading"
        limit = MAX_LABEL if heading else MAX_PARAGRAPH
        field_id = self.field_id(link_id)
        label = self._label(item, link_id, limit)
        pending = _Pending(
            {"id": field_id, "type": "heading" if heading else "paragraph", "label": label}, link_id
        )
        self.pending.append(pending)
        self._translate(field_id, "label", read_translations(item.get("_text")))
        self._conditions(pending, item)

    def question(self, item: JsonObject, link_id: str, kind: str) -> _Pending | None:
        hf_type = first_value(item, HF_FIELD_TYPE, "valueCode")
        if item.get("readOnly"):
            if kind in ("integer", "decimal"):
                return self.score(item, link_id)
            self.drop(
                link_id, "readOnly", f"a read-only {kind[:20]} item is not supported (only scores)"
            )
            return None
        raw: JsonObject = {}
        choice: _Choice | None = None
        if kind in ("string", "text"):
            raw["type"] = (
                hf_type
                if hf_type in ("email", "phone", "text") and kind == "string"
                else ("text" if kind == "string" else "textarea")
            )
            max_length = item.get("maxLength")
            default = DEFAULT_TEXT_MAX if raw["type"] == "text" else DEFAULT_TEXTAREA_MAX
            if isinstance(max_length, int) and max_length != default:
                raw["max"] = max_length  # the default bound is what a field without one has
            min_length = first_value(item, MIN_LENGTH, "valueInteger")
            if isinstance(min_length, int):
                raw["min"] = min_length
            if raw["type"] in ("email", "phone"):
                raw.pop("max", None)
                raw.pop("min", None)
        elif kind in ("integer", "decimal"):
            raw["type"] = "number"
            if kind == "integer":
                self.note(
                    link_id, "integer", "imported as a number: whole numbers are not enforced"
                )
            low = first_value(item, MIN_VALUE, "valueDecimal", "valueInteger")
            high = first_value(item, MAX_VALUE, "valueDecimal", "valueInteger")
            if isinstance(low, int | float):
                raw["min"] = low
            if isinstance(high, int | float):
                raw["max"] = high
        elif kind == "date":
            raw["type"] = "date"
        elif kind == "boolean":
            raw["type"] = "checkbox"
        elif kind in ("choice", "open-choice"):
            choice = self.options(item, link_id)
            if choice is None:
                return None
            if kind == "open-choice":
                self.drop(
                    link_id, "open-choice", "a free-text answer besides the options is not offered"
                )
            control = _item_control(item)
            if item.get("repeats"):
                raw["type"] = "checkbox"
            elif hf_type in ("select", "radio"):
                raw["type"] = hf_type
            else:
                raw["type"] = "select" if control == "drop-down" else "radio"
            raw["options"] = choice.options
            if choice.scores is not None:
                raw["optionScores"] = [
                    int(s) if float(s).is_integer() else s for s in choice.scores
                ]
        elif kind == "attachment":
            if hf_type == "signature":
                raw["type"] = "signature"
            else:
                raw["type"] = "file"
                self.attachment(item, link_id, raw)
        else:
            self.drop(
                link_id,
                f"type {kind[:20]}",
                "no field type of the service takes this kind of answer",
            )
            return None
        if item.get("repeats") and raw["type"] not in ("checkbox", "file"):
            self.drop(
                link_id, "repeats", "only multiple choice and file questions take several answers"
            )
        field_id = self.field_id(link_id)
        raw = {
            "id": field_id,
            "type": raw.pop("type"),
            "label": self._label(item, link_id, MAX_LABEL),
            **raw,
        }
        if item.get("required") is True:
            raw["required"] = True
        if raw["type"] in ("text", "textarea", "email", "phone"):
            pattern = first_value(item, REGEX, "valueString")
            if isinstance(pattern, str):
                try:
                    compile_pattern(pattern)
                    raw["pattern"] = pattern
                except UnsafePattern:
                    self.drop(link_id, "regex", "not a pattern the service can run safely (RE2)")
        identifies = first_value(item, HF_IDENTIFIES, "valueCode")
        if identifies in ("name", "birthDate"):
            raw["identifies"] = identifies
        self._translate(field_id, "label", read_translations(item.get("_text")))
        if choice is not None:
            self.choices[field_id] = choice
            for lang, texts in choice.translated.items():
                self._translate(field_id, "options", {lang: texts})  # type: ignore[dict-item]
        pending = _Pending(raw, link_id)
        self._conditions(pending, item)
        self.pending.append(pending)
        return pending

    def attachment(self, item: JsonObject, link_id: str, raw: JsonObject) -> None:
        types = {e.get("valueCode") for e in ext_values(item, MIME_TYPE)}
        if types:
            accept = [k for k, mimes in MIME_TYPES.items() if types & set(mimes)]
            others = types - {m for mimes in MIME_TYPES.values() for m in mimes}
            if others:
                self.drop(link_id, "mimeType", "only photos (JPEG, PNG, WebP) and PDF are taken")
            if accept:
                raw["accept"] = accept
        size = first_value(item, MAX_SIZE, "valueDecimal")
        if isinstance(size, int | float) and size > 0:
            mb = math.ceil(size / (1024 * 1024))
            clamped = min(max(mb, MAX_SIZE_MB_RANGE[0]), MAX_SIZE_MB_RANGE[1])
            if clamped * 1024 * 1024 != size:
                self.note(link_id, "maxSize", f"{clamped} MiB per file")
            raw["maxSizeMb"] = clamped
        occurs = first_value(item, MAX_OCCURS, "valueInteger")
        if isinstance(occurs, int):
            count = min(max(occurs, MAX_FILES_RANGE[0]), MAX_FILES_RANGE[1])
            if count != occurs:
                self.note(link_id, "maxOccurs", f"at most {count} files")
            raw["maxFiles"] = count
        elif item.get("repeats"):
            raw["maxFiles"] = MAX_FILES_RANGE[1]
            self.note(link_id, "repeats", f"at most {MAX_FILES_RANGE[1]} files")
        # What a file field without them has anyway (forms/schema.py) is left unsaid.
        if sorted(raw.get("accept", [])) == sorted(FILE_KINDS):
            raw.pop("accept")
        if raw.get("maxFiles") == DEFAULT_MAX_FILES:
            raw.pop("maxFiles")
        if raw.get("maxSizeMb") == DEFAULT_MAX_SIZE_MB:
            raw.pop("maxSizeMb")

    def options(self, item: JsonObject, link_id: str) -> _Choice | None:
        answer_options = [o for o in item.get("answerOption") or [] if isinstance(o, dict)]
        if not answer_options:
            why = (
                "answerValueSet is not expanded"
                if item.get("answerValueSet")
                else "no answerOption"
            )
            self.drop(link_id, "choice", f"{why}: a choice needs its options in the Questionnaire")
            return None
        if len(answer_options) > MAX_OPTIONS:
            self.drop(link_id, "answerOption", f"at most {MAX_OPTIONS} options")
            return None
        texts: list[str] = []
        by_code: dict[str, str] = {}
        scores: list[float | None] = []
        translated: dict[str, list[str]] = {}
        codes_lost = False
        for index, option in enumerate(answer_options):
            coding = option.get("valueCoding")
            element: object = None
            if isinstance(coding, dict):
                display, code = coding.get("display"), coding.get("code")
                text = display if isinstance(display, str) and display.strip() else code
                element = coding.get("_display")
                if isinstance(code, str):
                    by_code[code] = str(text)
                    codes_lost = codes_lost or code != text or bool(coding.get("system"))
                score = _ordinal(coding) if _ordinal(coding) is not None else _ordinal(option)
            else:
                value = next(
                    (
                        option[k]
                        for k in ("valueString", "valueInteger", "valueDate", "valueTime")
                        if k in option
                    ),
                    None,
                )
                if value is None:
                    self.drop(
                        link_id, "answerOption", "an option that is a reference is not supported"
                    )
                    return None
                text = str(value)
                element = option.get("_valueString")
                score = _ordinal(option)
            if not isinstance(text, str) or not text.strip() or len(text) > MAX_OPTION_LEN:
                self.drop(
                    link_id,
                    "answerOption",
                    f"every option needs a text of 1 to {MAX_OPTION_LEN} characters",
                )
                return None
            texts.append(text)
            scores.append(score)
            for lang, words in read_translations(element).items():
                translated.setdefault(lang, [""] * len(answer_options))[index] = words
        if len(set(texts)) != len(texts):
            self.drop(link_id, "answerOption", "two options have the same text")
            return None
        if codes_lost:
            self.note(
                link_id,
                "answerOption",
                "options are kept by their display text; codes and systems are not kept",
            )
        numbers: list[float] | None = None
        if all(s is not None for s in scores):
            numbers = [float(s) for s in scores if s is not None]
        elif any(s is not None for s in scores):
            self.drop(link_id, "ordinalValue", "only some options carry a number: none is kept")
        return _Choice(texts, by_code, numbers, translated)

    def score(self, item: JsonObject, link_id: str) -> _Pending | None:
        field_id = self.field_id(link_id)
        raw: JsonObject = {
            "id": field_id,
            "type": "score",
            "label": self._label(item, link_id, MAX_LABEL),
        }
        pending = _Pending(raw, link_id)
        # Without our score extension, _resolve_score assumes the sum of ordinal values.
        pending.score_ext = next(iter(ext_values(item, HF_SCORE)), None)
        for ext in item.get("extension") or []:
            if isinstance(ext, dict) and "calculatedExpression" in str(ext.get("url")):
                self.note(link_id, "calculatedExpression", "not evaluated (see the score note)")
        self._translate(field_id, "label", read_translations(item.get("_text")))
        self.pending.append(pending)
        return pending

    def _conditions(self, pending: _Pending, item: JsonObject) -> None:
        ext = first_value(item, HF_SHOW_WHEN, "valueString")
        if isinstance(ext, str):
            pending.show_when_ext = ext  # exact: the expression beside it says the same
            return
        if ext_values(item, SDC_ENABLE_WHEN_EXPRESSION):
            self.drop(
                pending.link_id,
                "enableWhenExpression",
                "FHIRPath is never evaluated: the item is always shown",
            )
        when = [w for w in item.get("enableWhen") or [] if isinstance(w, dict)]
        if when:
            pending.enable_when = when
            behavior = item.get("enableBehavior")
            pending.behavior = behavior if isinstance(behavior, str) else None

    # --- second pass: conditions and scores, now that every id is known ---------------

    def resolve(self) -> None:
        for pending in self.pending:
            if pending.raw["type"] == "score":
                self._resolve_score(pending)
            show_when = self._show_when(pending)
            if show_when is not None:
                pending.raw["showWhen"] = show_when

    def _resolve_score(self, pending: _Pending) -> None:
        raw, link_id = pending.raw, pending.link_id
        earlier = [p.raw for p in self.pending[: self.pending.index(pending)]]
        scored = [r["id"] for r in earlier if "optionScores" in r]
        if pending.score_ext is not None:
            terms, bands, show = [], [], False
            for part in pending.score_ext.get("extension") or []:
                url = part.get("url")
                values = {p.get("url"): _value(p) for p in part.get("extension") or []}
                if url == "term":
                    target = self.ids.get(str(values.get("linkId")))
                    terms.append({"field": target, "weight": values.get("weight", 1)})
                elif url == "band":
                    bands.append(
                        {
                            "min": values.get("min"),
                            "max": values.get("max"),
                            "label": values.get("label"),
                        }
                    )
                elif url == "showPatient":
                    show = part.get("valueBoolean") is True
            raw["score"] = {"sum": terms, "bands": bands, "showPatient": show}
            return
        if not scored:
            raw["type"] = "__drop__"
            self.drop(
                link_id,
                "readOnly",
                "a read-only number is only imported as a score of scored options",
            )
            return
        raw["score"] = {"sum": [{"field": f, "weight": 1} for f in scored]}
        self.note(
            link_id,
            "score",
            f"imported as the sum of the ordinal values of the {len(scored)} scored items "
            "before it (no expression is evaluated); the Questionnaire has no bands: add "
            "them in the editor",
        )

    def _show_when(self, pending: _Pending) -> JsonObject | None:
        link_id = pending.link_id
        if pending.show_when_ext is not None:
            try:
                parsed = json.loads(pending.show_when_ext)
            except (ValueError, RecursionError):
                self.drop(link_id, "show-when", "not valid JSON: the item is always shown")
                return None
            return _rename(parsed, self.ids) if isinstance(parsed, dict) else None
        if not pending.enable_when:
            return None
        conditions = self._enable_when(pending)
        if conditions is None:
            self.drop(
                link_id,
                "enableWhen",
                "cannot be expressed as a condition of the service: the item is always shown",
            )
            return None
        if len(conditions) == 1:
            return conditions[0]
        if len(conditions) > MAX_CONDITIONS:
            self.drop(
                link_id,
                "enableWhen",
                f"at most {MAX_CONDITIONS} conditions: the item is always shown",
            )
            return None
        return {"any" if pending.behavior == "any" else "all": conditions}

    def _enable_when(self, pending: _Pending) -> list[JsonObject] | None:
        """The conditions of an enableWhen, or None when one of them has no exact
        counterpart (its operator, its question or its answer)."""
        entries, link_id = pending.enable_when, pending.link_id
        any_of = pending.behavior == "any"
        # Our export's "not equal": (exists false) OR (!= V) on one question.
        different = {str(e.get("question")) for e in entries if e.get("operator") == "!="}
        conditions: list[JsonObject] = []
        for entry in entries:
            question, op = str(entry.get("question")), entry.get("operator")
            field_id = self.ids.get(question)
            if field_id is None:
                return None
            if op == "exists" and entry.get("answerBoolean") is False:
                if any_of and question in different:
                    continue  # the "missing" half of a "not equal"
                return None
            value = self._answer_value(entry, field_id)
            if value is _NO_VALUE or op not in ("=", "!="):
                return None
            if op == "=":
                conditions.append({"field": field_id, "equals": value})
                continue
            paired = any_of and any(
                e.get("operator") == "exists" and e.get("answerBoolean") is False
                and str(e.get("question")) == question
                for e in entries
            )  # fmt: skip
            if not paired:
                self.note(
                    link_id,
                    "enableWhen",
                    "'!=' imported as 'not equal', which also holds when unanswered",
                )
            conditions.append({"field": field_id, "notEquals": value})
        return conditions or None

    def _answer_value(self, entry: JsonObject, field_id: str) -> object:
        if isinstance(entry.get("answerCoding"), dict):
            coding = entry["answerCoding"]
            choice = self.choices.get(field_id)
            code = coding.get("code")
            if choice is None or not isinstance(code, str) or code not in choice.by_code:
                return _NO_VALUE
            return choice.by_code[code]
        for key in (
            "answerBoolean",
            "answerDecimal",
            "answerInteger",
            "answerDate",
            "answerString",
        ):
            if key in entry:
                return entry[key]
        return _NO_VALUE


_NO_VALUE = object()


def _value(extension: JsonObject) -> object:
    """The value[x] of an extension, whatever its type."""
    return next((v for k, v in extension.items() if k.startswith("value")), None)


def _rename(show_when: JsonObject, ids: dict[str, str]) -> JsonObject:
    def one(condition: JsonObject) -> JsonObject:
        target = condition.get("field")
        if isinstance(target, str) and target in ids:
            return {**condition, "field": ids[target]}
        return condition

    renamed = one(show_when)
    for group in ("all", "any"):
        if isinstance(renamed.get(group), list):
            renamed[group] = [one(c) if isinstance(c, dict) else c for c in renamed[group]]
    return renamed


def _ordinal(holder: object) -> float | None:
    for url in (ORDINAL_VALUE, ITEM_WEIGHT, OLD_ORDINAL):
        value = first_value(holder, url, "valueDecimal", "valueInteger")
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return None


def _item_control(item: JsonObject) -> str | None:
    concept = first_value(item, ITEM_CONTROL, "valueCodeableConcept")
    if isinstance(concept, dict):
        for coding in concept.get("coding") or []:
            if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                return str(coding["code"])
    return None


def _is_help(item: object) -> bool:
    return (
        isinstance(item, dict) and item.get("type") == "display" and _item_control(item) == "help"
    )


def _validated(mapper: _Mapper) -> list[FieldDef]:
    """validate_fields over the built fields; a field it refuses loses its condition,
    then (refused again) is dropped, each listed. Bounded: one pass per field."""
    raws = [p.raw for p in mapper.pending if p.raw["type"] != "__drop__"]
    links = {p.raw["id"]: p.link_id for p in mapper.pending}
    if len(raws) > MAX_FIELDS:
        for extra in raws[MAX_FIELDS:]:
            mapper.drop(links[extra["id"]], "item", f"a form holds at most {MAX_FIELDS} fields")
        raws = raws[:MAX_FIELDS]
    for _ in range(len(raws) + 1):
        try:
            return validate_fields(raws)
        except ValidationFailed as exc:
            problems: dict[str, str] = exc.extra.get("fields", {}) if exc.extra else {}
            if not problems:
                raise
            kept: list[JsonObject] = []
            for raw in raws:
                problem = problems.get(raw["id"])
                if problem is None:
                    kept.append(raw)
                elif "showWhen" in raw:
                    mapper.drop(
                        links.get(raw["id"]),
                        "condition",
                        f"{problem[:200]}: the item is always shown",
                    )
                    kept.append({k: v for k, v in raw.items() if k != "showWhen"})
                else:
                    mapper.drop(links.get(raw["id"]), "item", problem[:200])
            if "fields" in problems:
                raise
            raws = kept
    raise _invalid("the items could not be made into a valid form")  # pragma: no cover


def _texts_of(data: JsonObject, key: str) -> dict[str, str]:
    return read_translations(data.get(f"_{key}"))


def import_questionnaire(data: JsonObject) -> Imported:
    """Map a validated Questionnaire (validate_questionnaire) to a draft form's parts."""
    mapper = _Mapper()
    if data.get("modifierExtension"):
        raise _invalid("modifierExtension changes the Questionnaire's meaning: not supported")
    for ext in data.get("extension") or []:
        mapper.drop(None, f"extension {str(ext.get('url'))[:200]}", "not supported: ignored")
    kept_out = [key for key in _METADATA if data.get(key) not in (None, [], "")]
    if kept_out:
        mapper.note(None, ", ".join(kept_out), "metadata of the resource: not kept on the form")
    items = [i for i in data.get("item") or [] if isinstance(i, dict)]
    mapper.walk(items, top=True)
    mapper.resolve()
    fields = _validated(mapper)
    title = data.get("title") or data.get("name") or "Imported questionnaire"
    title = str(title).strip()[:MAX_TITLE] or "Imported questionnaire"
    description = str(data.get("description") or "")[:MAX_DESCRIPTION]
    translations = mapper.translations
    for key, limit in (("title", MAX_TITLE), ("description", MAX_DESCRIPTION)):
        for lang, text in _texts_of(data, key).items():
            if lang in TRANSLATABLE_LANGUAGES:
                translations.setdefault(lang, {})[key] = text[:limit]
    known = {f.id for f in fields}
    for texts in translations.values():
        texts["fields"] = {k: v for k, v in (texts.get("fields") or {}).items() if k in known}
    try:
        cleaned = validate_translations(translations, fields)
    except ValidationFailed as exc:
        where = ", ".join((exc.extra or {}).get("fields", {}).values())[:200]
        mapper.drop(None, "translations", f"not imported: {where}")
        cleaned = {}
    return Imported(title, description, fields, cleaned, mapper.unsupported, mapper.notes)


__all__ = ["Finding", "Imported", "import_questionnaire", "validate_questionnaire"]
