"""HIPAA authorisation to use or disclose protected health information.

Holds every core element and required statement of 45 CFR 164.508(c):
(c)(1)(i) a specific description of the information (`information`, `information_other`);
(ii) who may disclose it (`discloser`); (iii) to whom (`recipient_name`, `recipient_address`);
(iv) each purpose (`purpose`, `purpose_other`; "at the request of the individual" is
allowed); (v) an expiration date or event (`expires`, `expiry_date`, `expiry_event`);
(vi) the signature and date (`signature`, `signed_on`) and, for a personal representative,
their authority (`representative_name`, `representative_authority`).
(c)(2)(i) the right to revoke in writing and how (`ack_revoke`); (ii) that treatment,
payment, enrollment and eligibility are not conditioned on signing (`ack_conditioning`);
(iii) that disclosed information may be redisclosed and no longer protected
(`ack_redisclosure`). (c)(4): the patient is offered a copy (the description says so;
the clinic hands it over from the response's PDF).
Psychotherapy notes need an authorisation of their own (164.508(a)(2)): the form says so.
"""

from __future__ import annotations

from typing import Any

INFORMATION = [
    "My complete medical record",
    "Office and visit notes",
    "Laboratory and test results",
    "Imaging reports (X-ray, MRI, CT, ultrasound)",
    "Medication and allergy lists",
    "Immunization records",
    "Billing and payment records",
    "Other (describe below)",
]
PURPOSES = [
    "At my request",
    "Continuing care by another provider",
    "Insurance or benefits",
    "Legal matters",
    "Other (describe below)",
]

TEMPLATE: dict[str, Any] = {
    "id": "hipaa_authorization",
    "title": "Authorization to use or disclose health information (HIPAA)",
    "summary": "Patient's authorization to release protected health information, with every "
    "element 45 CFR 164.508 requires: what, by whom, to whom, purpose, expiry, right to "
    "revoke, signature and date.",
    "description": "This form lets the clinic use or disclose your health information as you "
    "choose below. You do not have to sign it. It does not cover psychotherapy notes, which "
    "need a separate authorization. You are entitled to a copy of this form once signed: ask "
    "the clinic for one.",
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
        {
            "id": "information",
            "type": "checkbox",
            "required": True,
            "label": "Which information may be used or disclosed? Tick all that apply.",
            "options": INFORMATION,
        },
        {
            "id": "information_other",
            "type": "textarea",
            "label": "Describe the other information (for example the dates of treatment)",
            "required": True,
            "max": 2000,
            "showWhen": {"field": "information", "contains": "Other (describe below)"},
        },
        {
            "id": "sensitive",
            "type": "checkbox",
            "required": False,
            "label": "The information may include the following, which I specifically authorize "
            "to be disclosed. Tick only those you agree to.",
            "options": [
                "HIV/AIDS test results or treatment",
                "Mental health records",
                "Alcohol or drug treatment records",
                "Genetic testing results",
                "Sexually transmitted infection records",
            ],
        },
        {
            "id": "discloser",
            "type": "text",
            "label": "Who may disclose the information (person or organization)",
            "required": True,
            "max": 300,
            "helpText": "Usually this clinic. Name another provider if they hold the records.",
        },
        {
            "id": "recipient_name",
            "type": "text",
            "label": "Who may receive the information (person or organization)",
            "required": True,
            "max": 300,
        },
        {
            "id": "recipient_address",
            "type": "textarea",
            "label": "Recipient's address, fax or email",
            "required": False,
            "max": 1000,
        },
        {
            "id": "purpose",
            "type": "checkbox",
            "required": True,
            "label": "Purpose of the disclosure. Tick all that apply.",
            "options": PURPOSES,
        },
        {
            "id": "purpose_other",
            "type": "text",
            "label": "Describe the other purpose",
            "required": True,
            "max": 500,
            "showWhen": {"field": "purpose", "contains": "Other (describe below)"},
        },
        {
            "id": "expires",
            "type": "radio",
            "label": "This authorization expires",
            "required": True,
            "options": ["On a date", "When an event happens"],
        },
        {
            "id": "expiry_date",
            "type": "date",
            "label": "Expiration date",
            "required": True,
            "showWhen": {"field": "expires", "equals": "On a date"},
        },
        {
            "id": "expiry_event",
            "type": "text",
            "label": "Expiration event (for example: the end of my insurance claim)",
            "required": True,
            "max": 300,
            "showWhen": {"field": "expires", "equals": "When an event happens"},
        },
        {
            "id": "ack_revoke",
            "type": "checkbox",
            "required": True,
            "label": "I understand that I may revoke this authorization at any time by writing "
            "to the clinic, except where action has already been taken in reliance on it. The "
            "clinic's Notice of Privacy Practices explains how.",
        },
        {
            "id": "ack_conditioning",
            "type": "checkbox",
            "required": True,
            "label": "I understand that my treatment, payment, enrollment in a health plan or "
            "eligibility for benefits will not be conditioned on whether I sign this "
            "authorization.",
        },
        {
            "id": "ack_redisclosure",
            "type": "checkbox",
            "required": True,
            "label": "I understand that information disclosed under this authorization may be "
            "redisclosed by the recipient and may then no longer be protected by federal "
            "privacy law.",
        },
        {
            "id": "signer",
            "type": "radio",
            "label": "Who is signing this form?",
            "required": True,
            "options": ["The patient", "A personal representative"],
        },
        {
            "id": "representative_name",
            "type": "text",
            "label": "Representative's full name",
            "required": True,
            "max": 200,
            "showWhen": {"field": "signer", "equals": "A personal representative"},
        },
        {
            "id": "representative_authority",
            "type": "text",
            "label": "Representative's authority to act for the patient (for example parent, "
            "legal guardian, health care power of attorney)",
            "required": True,
            "max": 300,
            "showWhen": {"field": "signer", "equals": "A personal representative"},
        },
        {"id": "signature", "type": "signature", "label": "Signature", "required": True},
        {"id": "signed_on", "type": "date", "label": "Date signed", "required": True},
    ],
}
