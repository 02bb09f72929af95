"""Consent to treatment: the patient (or their representative) agrees to examination and
care, knowing they may ask questions and withdraw consent."""

from __future__ import annotations

from typing import Any

# What the patient consents to: shown above the boxes they tick (a paragraph block).
CONSENT_TEXT = (
    "I voluntarily consent to the medical examination, tests and treatment "
    "that the clinic's physicians, nurses and other licensed staff consider necessary for my "
    "care. They will explain the nature and purpose of any procedure, its expected benefits, "
    "risks and alternatives, and I may ask questions before agreeing. A procedure with "
    "significant risk (for example surgery or anaesthesia) needs its own written consent. "
    "I understand that medicine is not an exact science and that no guarantee has been made "
    "about the results of examination or treatment."
)

TEMPLATE: dict[str, Any] = {
    "id": "consent_treatment",
    "title": "Consent to treatment",
    "summary": "General consent to examination and treatment, signed by the patient or "
    "their legal representative.",
    "description": "Please read the consent below, then sign it. Ask the clinic about "
    "anything that is not clear.",
    "fields": [
        {
            "id": "patient_name",
            "type": "text",
            "label": "Patient's full name",
            "required": True,
            "max": 200,
            "identifies": "name",
        },
        {
            "id": "birth_date",
            "type": "date",
            "label": "Patient's date of birth",
            "required": True,
            "identifies": "birthDate",
        },
        {"id": "consent_text", "type": "paragraph", "label": CONSENT_TEXT},
        {
            "id": "consent_care",
            "type": "checkbox",
            "required": True,
            "label": "I consent to examination and treatment by the clinic's staff, as described "
            "above.",
        },
        {
            "id": "consent_questions",
            "type": "checkbox",
            "required": True,
            "label": "I have read this form (or had it read to me) and had the chance to ask "
            "questions.",
        },
        {
            "id": "consent_withdraw",
            "type": "checkbox",
            "required": True,
            "label": "I understand that I may refuse any treatment and withdraw this consent at "
            "any time, in writing, except for care already given.",
        },
        {
            "id": "signer",
            "type": "radio",
            "label": "Who is signing this form?",
            "required": True,
            "options": ["The patient", "A parent or guardian", "A legal representative"],
        },
        {
            "id": "representative_name",
            "type": "text",
            "label": "Your full name",
            "required": True,
            "max": 200,
            "showWhen": {"field": "signer", "notEquals": "The patient"},
        },
        {
            "id": "representative_authority",
            "type": "text",
            "label": "Your relationship to the patient or authority to sign for them",
            "required": True,
            "max": 200,
            "showWhen": {"field": "signer", "notEquals": "The patient"},
        },
        {"id": "signature", "type": "signature", "label": "Signature", "required": True},
        {"id": "signed_on", "type": "date", "label": "Date", "required": True},
    ],
}
