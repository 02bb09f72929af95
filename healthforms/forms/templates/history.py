"""Medical history: conditions, surgeries, medications, allergies, family and social
history."""

from __future__ import annotations

from typing import Any

CONDITIONS = [
    "Asthma or COPD",
    "Diabetes",
    "High blood pressure",
    "Heart disease",
    "Stroke",
    "Cancer",
    "Thyroid disease",
    "Kidney disease",
    "Liver disease",
    "Depression or anxiety",
    "Seizures or epilepsy",
    "Arthritis",
    "Other (describe below)",
]
FAMILY = [
    "Heart disease",
    "Diabetes",
    "High blood pressure",
    "Stroke",
    "Cancer",
    "Mental illness",
    "Other (describe below)",
]

TEMPLATE: dict[str, Any] = {
    "id": "medical_history",
    "title": "Medical history",
    "summary": "Past and current conditions, surgeries, medications, allergies, family "
    "history, tobacco and alcohol use.",
    "description": "Tell us about your health so far. Leave out anything you are not sure "
    "of; your clinician will go through it with you.",
    "fields": [
        {
            "id": "full_name",
            "type": "text",
            "label": "Full name",
            "required": True,
            "max": 200,
            "identifies": "name",
        },
        {
            "id": "birth_date",
            "type": "date",
            "label": "Date of birth",
            "required": True,
            "identifies": "birthDate",
        },
        {
            "id": "conditions",
            "type": "checkbox",
            "label": "Have you ever been told you have any of these conditions? Tick all that "
            "apply.",
            "required": False,
            "options": CONDITIONS,
        },
        {
            "id": "conditions_other",
            "type": "textarea",
            "label": "Other conditions",
            "required": False,
            "max": 2000,
            "showWhen": {"field": "conditions", "contains": "Other (describe below)"},
        },
        {
            "id": "surgeries",
            "type": "textarea",
            "label": "Operations or hospital stays (what and when)",
            "required": False,
            "max": 2000,
        },
        {
            "id": "medications",
            "type": "textarea",
            "label": "Medicines you take now, with the dose (include vitamins and supplements)",
            "required": False,
            "max": 4000,
        },
        {
            "id": "has_allergies",
            "type": "radio",
            "label": "Are you allergic to any medicines, foods or other things?",
            "required": True,
            "options": ["Yes", "No", "Not sure"],
        },
        {
            "id": "allergies",
            "type": "textarea",
            "label": "What are you allergic to, and what happens?",
            "required": True,
            "max": 2000,
            "showWhen": {"field": "has_allergies", "equals": "Yes"},
        },
        {
            "id": "family_history",
            "type": "checkbox",
            "label": "Has a parent, brother or sister had any of these? Tick all that apply.",
            "required": False,
            "options": FAMILY,
        },
        {
            "id": "family_other",
            "type": "textarea",
            "label": "Other family history",
            "required": False,
            "max": 2000,
            "showWhen": {"field": "family_history", "contains": "Other (describe below)"},
        },
        {
            "id": "tobacco",
            "type": "radio",
            "label": "Do you smoke or use tobacco?",
            "required": False,
            "options": ["Never", "In the past", "Yes, now"],
        },
        {
            "id": "alcohol",
            "type": "select",
            "label": "How often do you drink alcohol?",
            "required": False,
            "options": [
                "Never",
                "Monthly or less",
                "2–4 times a month",
                "2–3 times a week",
                "4 or more times a week",
            ],
        },
        {
            "id": "pregnant",
            "type": "radio",
            "label": "Are you pregnant or could you be?",
            "required": False,
            "options": ["No", "Yes", "Not sure", "Does not apply"],
        },
    ],
}
