"""New-patient intake: who the patient is, how to reach them, insurance, why they come."""

from __future__ import annotations

from typing import Any

TEMPLATE: dict[str, Any] = {
    "id": "intake",
    "title": "New patient intake",
    "summary": "Name, date of birth, contact details, emergency contact, insurance and "
    "reason for the visit, with the patient's signature.",
    "description": "Please fill in this form before your first visit. Your answers are sent "
    "securely to the clinic and kept in your medical record.",
    "fields": [
        {
            "id": "first_name",
            "type": "text",
            "label": "First name",
            "required": True,
            "max": 100,
            "identifies": "name",
        },
        {
            "id": "last_name",
            "type": "text",
            "label": "Last name",
            "required": True,
            "max": 100,
            "identifies": "name",
        },
        {
            "id": "preferred_name",
            "type": "text",
            "label": "Preferred name",
            "required": False,
            "max": 100,
        },
        {
            "id": "birth_date",
            "type": "date",
            "label": "Date of birth",
            "required": True,
            "identifies": "birthDate",
        },
        {
            "id": "sex",
            "type": "select",
            "label": "Sex assigned at birth",
            "required": False,
            "options": ["Female", "Male", "Intersex", "Prefer not to say"],
        },
        {"id": "phone", "type": "phone", "label": "Mobile phone", "required": True},
        {"id": "email", "type": "email", "label": "Email", "required": False},
        {
            "id": "address",
            "type": "textarea",
            "label": "Home address",
            "required": True,
            "max": 500,
        },
        {
            "id": "emergency_name",
            "type": "text",
            "label": "Emergency contact: name",
            "required": True,
            "max": 200,
        },
        {
            "id": "emergency_relationship",
            "type": "text",
            "label": "Emergency contact: relationship to you",
            "required": False,
            "max": 100,
        },
        {
            "id": "emergency_phone",
            "type": "phone",
            "label": "Emergency contact: phone",
            "required": True,
        },
        {
            "id": "insured",
            "type": "radio",
            "label": "Do you have health insurance?",
            "required": True,
            "options": ["Yes", "No"],
        },
        {
            "id": "insurance_provider",
            "type": "text",
            "label": "Insurance company",
            "required": True,
            "max": 200,
            "showWhen": {"field": "insured", "equals": "Yes"},
        },
        {
            "id": "insurance_member_id",
            "type": "text",
            "label": "Member ID",
            "required": True,
            "max": 100,
            "showWhen": {"field": "insured", "equals": "Yes"},
        },
        {
            "id": "insurance_group",
            "type": "text",
            "label": "Group number",
            "required": False,
            "max": 100,
            "showWhen": {"field": "insured", "equals": "Yes"},
        },
        {
            "id": "primary_physician",
            "type": "text",
            "label": "Primary care physician",
            "required": False,
            "max": 200,
        },
        {
            "id": "pharmacy",
            "type": "text",
            "label": "Preferred pharmacy",
            "required": False,
            "max": 200,
        },
        {
            "id": "reason",
            "type": "textarea",
            "label": "What is the reason for your visit?",
            "required": True,
            "max": 2000,
        },
        {
            "id": "accurate",
            "type": "checkbox",
            "required": True,
            "label": "The information I have given is true and complete to the best of my "
            "knowledge.",
        },
        {"id": "signature", "type": "signature", "label": "Signature", "required": True},
    ],
}
