"""A form with every field type in each configuration, and FHIR validation helpers.

Resources are validated with fhir.resources' R4B models: R4 (4.0.1) itself is not in
its pydantic-v2 releases, and Questionnaire/QuestionnaireResponse did not change
between R4 and R4B (docs/fhir.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from fhir.resources.R4B.questionnaire import Questionnaire
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse
from sqlalchemy import select

from healthforms.audit.models import AuditEventRow
from healthforms.db.engine import Database

FIXTURES = Path(__file__).parent / "fixtures"

FREQUENCY = ["Not at all", "Several days", "More than half the days", "Nearly every day"]

EVERY_FIELD: list[dict[str, Any]] = [
    {"id": "intro", "type": "heading", "label": "About you"},
    {"id": "notice", "type": "paragraph", "label": "Your answers are kept private."},
    {
        "id": "name",
        "type": "text",
        "label": "Full name",
        "required": True,
        "identifies": "name",
        "min": 2,
        "max": 80,
        "pattern": "^[^0-9]+$",
        "helpText": "As on your insurance card",
    },
    {"id": "story", "type": "textarea", "label": "What brings you in?"},
    {"id": "email", "type": "email", "label": "Email"},
    {"id": "phone", "type": "phone", "label": "Phone"},
    {"id": "dob", "type": "date", "label": "Date of birth", "identifies": "birthDate"},
    {"id": "age", "type": "number", "label": "Age", "min": 0, "max": 120},
    {"id": "weight", "type": "number", "label": "Weight (kg)"},
    {"id": "color", "type": "select", "label": "Wristband", "options": ["Red", "Blue  two"]},
    {"id": "smoker", "type": "radio", "label": "Do you smoke?", "options": ["Yes", "No"]},
    {
        "id": "allergies",
        "type": "checkbox",
        "label": "Allergies",
        "options": ["Latex", "Pollen", "Penicillin"],
    },
    {"id": "consent", "type": "checkbox", "label": "I consent", "required": True},
    {"id": "sig", "type": "signature", "label": "Signature"},
    {
        "id": "photo",
        "type": "file",
        "label": "Insurance card",
        "accept": ["image"],
        "maxFiles": 3,
        "maxSizeMb": 5,
    },  # fmt: skip
    {"id": "doc", "type": "file", "label": "Referral letter"},
    # Conditions, one per mapping case (healthforms/fhir/questionnaire.py).
    {
        "id": "c_eq",
        "type": "text",
        "label": "Brand",
        "showWhen": {"field": "smoker", "equals": "Yes"},
    },
    {
        "id": "c_ne",
        "type": "text",
        "label": "Since",
        "showWhen": {"field": "smoker", "notEquals": "No"},
    },
    {
        "id": "c_multi",
        "type": "text",
        "label": "Reaction",
        "showWhen": {"field": "allergies", "contains": "Latex"},
    },  # fmt: skip
    {
        "id": "c_text",
        "type": "text",
        "label": "Where",
        "showWhen": {"field": "story", "contains": "pain"},
    },  # fmt: skip
    {
        "id": "c_ne_multi",
        "type": "text",
        "label": "Other",
        "showWhen": {"field": "allergies", "notEquals": "Latex"},
    },  # fmt: skip
    {
        "id": "c_all",
        "type": "date",
        "label": "Quit date",
        "showWhen": {"all": [{"field": "smoker", "equals": "Yes"}, {"field": "age", "equals": 30}]},
    },  # fmt: skip
    {
        "id": "c_any",
        "type": "text",
        "label": "Why",
        "showWhen": {
            "any": [{"field": "consent", "equals": True}, {"field": "dob", "equals": "2000-01-01"}]
        },
    },  # fmt: skip
    {
        "id": "c_all_ne",
        "type": "text",
        "label": "Band",
        "showWhen": {
            "all": [{"field": "smoker", "equals": "Yes"}, {"field": "color", "notEquals": "Red"}]
        },
    },  # fmt: skip
    {
        "id": "page2",
        "type": "pageBreak",
        "label": "Mood",
        "showWhen": {"field": "smoker", "equals": "Yes"},
    },  # fmt: skip
    {
        "id": "q1",
        "type": "radio",
        "label": "Feeling down",
        "required": True,
        "options": FREQUENCY,
        "optionScores": [0, 1, 2, 3],
    },  # fmt: skip
    {
        "id": "q2",
        "type": "checkbox",
        "label": "Trouble with",
        "options": ["Sleep", "Food"],
        "optionScores": [1.5, 2],
    },  # fmt: skip
    {
        "id": "total",
        "type": "score",
        "label": "Mood score",
        "score": {
            "sum": [{"field": "q1", "weight": 1}, {"field": "q2", "weight": 2}],
            "bands": [{"min": 0, "max": 3, "label": "Low"}, {"min": 4, "max": 10, "label": "High"}],
            "showPatient": True,
        },
    },  # fmt: skip
    {"id": "page3", "type": "pageBreak", "label": "Last page"},
    {
        "id": "q3",
        "type": "select",
        "label": "Overall",
        "options": ["Good", "Bad"],
        "optionScores": [0, 1],
    },  # fmt: skip
    {
        "id": "whole",
        "type": "score",
        "label": "Whole score",
        "score": {"sum": [{"field": "q3", "weight": 3}]},
    },  # fmt: skip
]

TRANSLATIONS: dict[str, Any] = {
    "es": {
        "title": "Todo",
        "description": "Complételo antes de su visita.",
        "fields": {
            "name": {"label": "Nombre completo", "helpText": "Como en su tarjeta"},
            "smoker": {"label": "¿Fuma?", "options": ["Sí", "No"]},
        },
    }
}

# Which conditions FHIR's enableWhen cannot write exactly (docs/fhir.md).
NOT_EXPRESSIBLE = {"c_text", "c_ne_multi", "c_all_ne"}


async def publish_form(
    http: httpx.AsyncClient,
    fields: list[dict[str, Any]],
    *,
    title: str = "Every field",
    translations: dict[str, Any] | None = None,
) -> str:
    body: dict[str, Any] = {"title": title, "description": "Complete before you visit.",
                            "fields": fields}  # fmt: skip
    if translations:
        body["translations"] = translations
    created = await http.post("/api/forms", json=body)
    assert created.status_code == 201, created.text
    form_id: str = created.json()["id"]
    published = await http.post(f"/api/forms/{form_id}/publish")
    assert published.status_code == 200, published.text
    return form_id


def valid_questionnaire(body: dict[str, Any]) -> Questionnaire:
    """The body as a Questionnaire, validated (raises on any invalid element)."""
    assert body["resourceType"] == "Questionnaire"
    return Questionnaire.model_validate(body)


def valid_response(body: dict[str, Any]) -> QuestionnaireResponse:
    assert body["resourceType"] == "QuestionnaireResponse"
    return QuestionnaireResponse.model_validate(body)


def all_items(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every item of a tree by linkId."""
    found: dict[str, dict[str, Any]] = {}
    stack = list(items)
    while stack:
        item = stack.pop()
        found[item["linkId"]] = item
        stack.extend(item.get("item") or [])
    return found


def extension_urls(item: dict[str, Any]) -> list[str]:
    return [e["url"] for e in item.get("extension") or []]


def phq9_fixture() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "phq9-loinc-44249-1.json").read_text())
    return data


async def audit_rows(db: Database, action: str, resource_id: str) -> list[AuditEventRow]:
    async with db.sessions() as session:
        rows = await session.execute(
            select(AuditEventRow)
            .where(AuditEventRow.action == action, AuditEventRow.resource_id == resource_id)
            .order_by(AuditEventRow.id)
        )
        return list(rows.scalars())
