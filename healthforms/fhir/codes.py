"""The URLs and small helpers both directions of the FHIR mapping share (docs/fhir.md).

Standard extensions are those of FHIR R4 4.0.1 core (and SDC, which builds on R4). Where
healthforms means more than a standard element can say (which field type a `string` item
was, the terms of a score, a condition FHIR cannot express), the item carries one of our
own extensions under HF: an identifier, not a page anyone needs to resolve. An importer
that does not know them still reads a faithful standard Questionnaire.
"""

from __future__ import annotations

import re
from typing import Any

# FHIR core (R4) extensions.
TRANSLATION = "http://hl7.org/fhir/StructureDefinition/translation"
ORDINAL_VALUE = "http://hl7.org/fhir/StructureDefinition/ordinalValue"
# R5/extension-pack name of the same idea; read on import, never written.
ITEM_WEIGHT = "http://hl7.org/fhir/StructureDefinition/itemWeight"
MIN_VALUE = "http://hl7.org/fhir/StructureDefinition/minValue"
MAX_VALUE = "http://hl7.org/fhir/StructureDefinition/maxValue"
MIN_LENGTH = "http://hl7.org/fhir/StructureDefinition/minLength"
REGEX = "http://hl7.org/fhir/StructureDefinition/regex"
MIME_TYPE = "http://hl7.org/fhir/StructureDefinition/mimeType"
MAX_SIZE = "http://hl7.org/fhir/StructureDefinition/maxSize"
MAX_OCCURS = "http://hl7.org/fhir/StructureDefinition/questionnaire-maxOccurs"
ITEM_CONTROL = "http://hl7.org/fhir/StructureDefinition/questionnaire-itemControl"
ITEM_CONTROL_SYSTEM = "http://hl7.org/fhir/questionnaire-item-control"
# SDC (built on R4): a FHIRPath condition, for what enableWhen cannot say.
SDC_ENABLE_WHEN_EXPRESSION = (
    "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-enableWhenExpression"
)

# Our own extensions (docs/fhir.md "healthforms extensions").
HF = "http://healthforms.example/fhir/StructureDefinition"
HF_FIELD_TYPE = f"{HF}/field-type"  # valueCode: the healthforms field type
HF_SHOW_WHEN = f"{HF}/show-when"  # valueString: the field's showWhen as JSON
HF_NOT_EXPRESSIBLE = f"{HF}/condition-not-expressible"  # valueString: why, in words
HF_IDENTIFIES = f"{HF}/identifies"  # valueCode: name | birthDate
HF_SCORE = f"{HF}/score"  # complex: term(linkId, weight)*, band(min, max, label)*, showPatient

# A FHIR `code`: no leading, trailing or doubled whitespace.
_CODE = re.compile(r"^[^\s]+( [^\s]+)*$")
MAX_CODE = 200


def is_code(value: str) -> bool:
    return len(value) <= MAX_CODE and bool(_CODE.match(value))


def option_code(option: str, index: int) -> str:
    """The Coding.code of an option: its own text when that is a valid code (so a
    receiver reads "Yes", not "option-1"), else its position."""
    return option if is_code(option) else f"option-{index + 1}"


def extension(url: str, **value: Any) -> dict[str, Any]:
    return {"url": url, **value}


def translations_ext(texts: dict[str, str]) -> dict[str, Any] | None:
    """The `_element` of a text with its other languages (None when there are none)."""
    if not texts:
        return None
    return {
        "extension": [
            {
                "url": TRANSLATION,
                "extension": [
                    {"url": "lang", "valueCode": lang},
                    {"url": "content", "valueString": text},
                ],
            }
            for lang, text in sorted(texts.items())
        ]
    }


def read_translations(element: object) -> dict[str, str]:
    """{lang: text} from a `_element` carrying translation extensions; anything else
    in it is ignored (the importer reports unknown extensions elsewhere)."""
    found: dict[str, str] = {}
    if not isinstance(element, dict):
        return found
    for ext in element.get("extension") or []:
        if not isinstance(ext, dict) or ext.get("url") != TRANSLATION:
            continue
        lang = content = None
        for part in ext.get("extension") or []:
            if not isinstance(part, dict):
                continue
            if part.get("url") == "lang" and isinstance(part.get("valueCode"), str):
                lang = part["valueCode"]
            if part.get("url") == "content" and isinstance(part.get("valueString"), str):
                content = part["valueString"]
        if lang and content:
            found[lang] = content
    return found


def ext_values(holder: object, url: str) -> list[dict[str, Any]]:
    """The extensions of `holder` (a dict) with this url."""
    if not isinstance(holder, dict):
        return []
    return [e for e in holder.get("extension") or [] if isinstance(e, dict) and e.get("url") == url]


def first_value(holder: object, url: str, *keys: str) -> Any:
    """The value (under the first of `keys` present) of the first extension with this url."""
    for ext in ext_values(holder, url):
        for key in keys:
            if key in ext:
                return ext[key]
    return None


def canonical_url(base_url: str, form_id: str) -> str:
    return f"{base_url.rstrip('/')}/fhir/Questionnaire/{form_id}"
