"""Organisations, published form versions and sealed responses, written straight to the DB.

The submissions feature creates responses over HTTP; these tests of reading, PDFs and
key rotation build them directly with the same envelope (seal_json + response_aad),
in the plaintext shape submissions writes: {"answers": {...}, "signatures": {...}}.
"""

from __future__ import annotations

import base64
import hashlib
import io
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from PIL import Image, ImageDraw

from healthforms.crypto.envelope import response_aad, seal_json
from healthforms.crypto.keys import KeyRing
from healthforms.db.base import new_id
from healthforms.db.engine import Database
from healthforms.forms.models import Form, FormVersion
from healthforms.forms.schema import FieldType, fields_from_json
from healthforms.identity.models import Organization
from healthforms.responses.models import ResponseRow
from healthforms.responses.patients import identity_of, store_identity

UNICODE_NAME = "Zoë Ångström-Łukasiewicz"

INTAKE_FIELDS: list[dict[str, Any]] = [
    {"id": "name", "type": "text", "label": "Full name", "required": True, "identifies": "name"},
    {"id": "email", "type": "email", "label": "Email address"},
    {"id": "dob", "type": "date", "label": "Date of birth", "identifies": "birthDate"},
    {"id": "history", "type": "textarea", "label": "Medical history"},
    {
        "id": "allergies",
        "type": "checkbox",
        "label": "Known allergies",
        "options": ["Penicillin", "Latex", "Peanuts", "Pollen"],
    },
    {"id": "smoker", "type": "radio", "label": "Do you smoke?", "options": ["Yes", "No"]},
    {
        "id": "packs",
        "type": "number",
        "label": "Packs per day (smokers only)",
        "showWhen": {"field": "smoker", "equals": "Yes"},
    },
    {"id": "consent", "type": "checkbox", "label": "I consent to treatment"},
    {"id": "signature", "type": "signature", "label": "Patient signature"},
]


def signature_data_url(width: int = 600, height: int = 200) -> str:
    """A transparent-background PNG with an ink stroke, as the signature pad sends it."""
    image = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    points = [(20, 150), (100, 40), (160, 160), (230, 50), (300, 140), (420, 60), (560, 120)]
    draw.line(points, fill=(10, 10, 80, 255), width=6)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def intake_answers(marker: str = "", **overrides: Any) -> dict[str, Any]:
    answers: dict[str, Any] = {
        "name": UNICODE_NAME,
        "email": "zoe@example.org",
        "dob": "1984-02-29",
        "history": f"Appendectomy in 2003 {marker}. " + "Seasonal asthma, well controlled. " * 12,
        "allergies": ["Latex", "Pollen"],
        "smoker": "No",
        "consent": True,
        "signature": signature_data_url(),
    }
    answers.update(overrides)
    return answers


def evidence(answers: dict[str, Any]) -> dict[str, Any]:
    digest = hashlib.sha256(repr(sorted(answers)).encode()).hexdigest()
    return {
        "signature": {
            "versionHash": "a" * 64,
            "answersHash": digest,
            "signedAt": "2026-11-25T19:54:37Z",
            "ip": "203.0.113.10",
            "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)",
        }
    }


@dataclass(frozen=True, slots=True)
class PublishedForm:
    organization_id: str
    form_id: str
    version_id: str
    version: int


async def create_organization(db: Database, name: str | None = None) -> str:
    async with db.sessions() as session, session.begin():
        org = Organization(name=name or f"Clinic {secrets.token_hex(4)}")
        session.add(org)
        await session.flush()
        return org.id


async def create_form(
    db: Database,
    organization_id: str,
    *,
    title: str = "New patient intake",
    fields: list[dict[str, Any]] | None = None,
    versions: int = 1,
    labels_by_version: dict[int, dict[str, str]] | None = None,
) -> list[PublishedForm]:
    """A published form with `versions` frozen versions; returns one entry per version."""
    fields = fields if fields is not None else INTAKE_FIELDS
    published: list[PublishedForm] = []
    async with db.sessions() as session, session.begin():
        form = Form(
            organization_id=organization_id,
            title=title,
            description="Please complete before your first visit.",
            fields=fields,
            status="published",
            version=versions,
            public_id=new_id("pub_"),
            has_unpublished_changes=False,
        )
        session.add(form)
        await session.flush()
        for number in range(1, versions + 1):
            renamed = (labels_by_version or {}).get(number, {})
            version_fields = [{**f, "label": renamed.get(f["id"], f["label"])} for f in fields]
            row = FormVersion(
                form_id=form.id,
                version=number,
                title=title,
                description="Please complete before your first visit.",
                fields=version_fields,
            )
            session.add(row)
            await session.flush()
            published.append(PublishedForm(organization_id, form.id, row.id, number))
    return published


async def create_response(
    db: Database,
    keys: KeyRing,
    form: PublishedForm,
    answers: dict[str, Any],
    signatures: dict[str, Any] | None = None,
    *,
    submitted_at: datetime | None = None,
) -> str:
    """Store one response sealed exactly as the submissions feature stores it, with its
    patient's identity (responses/patients.py) when the version's fields mark one."""
    response_id = new_id("rsp_")
    sealed = seal_json(
        keys,
        {"answers": answers, "signatures": signatures or {}},
        response_aad(response_id, form.form_id),
    )
    async with db.sessions() as session, session.begin():
        session.add(
            ResponseRow(
                id=response_id,
                organization_id=form.organization_id,
                form_id=form.form_id,
                form_version_id=form.version_id,
                form_version=form.version,
                nonce_id=secrets.token_hex(16),
                answers_digest=secrets.token_hex(32),
                confirmation=secrets.token_hex(6).upper(),
                ciphertext=sealed.ciphertext,
                wrapped_key=sealed.wrapped_key,
                key_id=sealed.key_id,
                submitted_at=submitted_at or datetime.now(UTC),
            )
        )
        await session.flush()
        version = await session.get(FormVersion, form.version_id)
        assert version is not None
        # Fields of a type this version of the service does not know are left out.
        known = [f for f in version.fields if f.get("type") in set(FieldType)]
        identity = identity_of(fields_from_json(known), answers)
        await store_identity(session, keys, form.organization_id, response_id, identity)
    return response_id
