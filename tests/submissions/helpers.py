"""Publishing forms and submitting them over HTTP, for the submissions tests."""

from __future__ import annotations

import base64
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from healthforms.crypto.envelope import Sealed, open_json, response_aad
from healthforms.responses.models import ResponseRow
from healthforms.state import AppState

PNG_1PX = base64.b64encode(
    bytes.fromhex(
        # One black RGBA pixel, as Pillow writes it (an earlier hand-made copy had a
        # broken data stream, which submissions now refuse).
        "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
        "0000000d49444154789c63606060f80f00010401005fe5c34b0000000049454e44ae426082"
    )
).decode()
SIGNATURE = "data:image/png;base64," + PNG_1PX

INTAKE_FIELDS: list[dict[str, Any]] = [
    {"id": "name", "type": "text", "label": "Full name", "required": True, "max": 100},
    {"id": "email", "type": "email", "label": "Email"},
    {"id": "phone", "type": "phone", "label": "Phone"},
    {"id": "age", "type": "number", "label": "Age", "min": 0, "max": 130},
    {"id": "dob", "type": "date", "label": "Date of birth"},
    {"id": "sex", "type": "select", "label": "Sex", "options": ["F", "M", "X"]},
    {"id": "smoker", "type": "radio", "label": "Smoker", "options": ["yes", "no"]},
    {
        "id": "packs",
        "type": "number",
        "label": "Packs a day",
        "required": True,
        "showWhen": {"field": "smoker", "equals": "yes"},
    },
    {"id": "allergies", "type": "checkbox", "label": "Allergies", "options": ["nuts", "dust"]},
    {
        "id": "nutsDetail",
        "type": "text",
        "label": "Which nuts",
        "required": True,
        "showWhen": {"field": "allergies", "contains": "nuts"},
    },
    {"id": "notes", "type": "textarea", "label": "Notes", "max": 50},
    {"id": "code", "type": "text", "label": "Code", "pattern": "[A-Z]{3}-[0-9]{2}"},
    {"id": "consent", "type": "checkbox", "label": "I consent", "required": True},
    {"id": "sig", "type": "signature", "label": "Signature"},
]


def good_answers(**overrides: Any) -> dict[str, Any]:
    answers: dict[str, Any] = {"name": "Ada Patient", "smoker": "no", "consent": True}
    answers.update(overrides)
    return answers


async def publish(
    http: httpx.AsyncClient, fields: list[dict[str, Any]] | None = None, title: str = "Intake"
) -> dict[str, Any]:
    created = await http.post(
        "/api/forms", json={"title": title, "fields": INTAKE_FIELDS if fields is None else fields}
    )
    assert created.status_code == 201, created.text
    published = await http.post(f"/api/forms/{created.json()['id']}/publish")
    assert published.status_code == 200
    form: dict[str, Any] = published.json()
    return form


async def fetch_nonce(http: httpx.AsyncClient, public_id: str) -> str:
    reply = await http.get(f"/api/public/forms/{public_id}")
    assert reply.status_code == 200, reply.text
    nonce: str = reply.json()["nonce"]
    return nonce


async def submit(
    http: httpx.AsyncClient, public_id: str, nonce: str, answers: dict[str, Any]
) -> httpx.Response:
    return await http.post(
        f"/api/public/forms/{public_id}/responses", json={"nonce": nonce, "answers": answers}
    )


async def stored_rows(app: FastAPI, form_id: str) -> list[ResponseRow]:
    state: AppState = app.state.hf
    async with state.db.sessions() as session:
        query = select(ResponseRow).where(ResponseRow.form_id == form_id)
        return list((await session.execute(query)).scalars().all())


async def count_rows(app: FastAPI, form_id: str) -> int:
    state: AppState = app.state.hf
    async with state.db.sessions() as session:
        query = select(func.count()).select_from(ResponseRow).where(ResponseRow.form_id == form_id)
        return int((await session.execute(query)).scalar_one())


def open_payload(app: FastAPI, row: ResponseRow) -> dict[str, Any]:
    state: AppState = app.state.hf
    sealed = Sealed(row.ciphertext, row.wrapped_key, row.key_id)
    payload = open_json(state.keys, sealed, response_aad(row.id, row.form_id))
    assert isinstance(payload, dict)
    return payload


async def publish_direct(database_url: str, fields: list[dict[str, Any]]) -> tuple[str, str]:
    """Publish a form straight through the services (no HTTP); return (form id, public id)."""
    import secrets

    from healthforms.db.engine import Database
    from healthforms.forms.schema import fields_from_json
    from healthforms.forms.service import FormService
    from healthforms.identity.models import Organization, User
    from healthforms.security.principal import Principal, Role

    db = Database.connect(database_url)
    try:
        async with db.sessions() as session:
            org = Organization(name=f"Clinic {secrets.token_hex(4)}")
            session.add(org)
            await session.flush()
            user = User(
                organization_id=org.id,
                email=f"{secrets.token_hex(5)}@example.test",
                name="Editor",
                role=Role.EDITOR.value,
            )
            session.add(user)
            await session.commit()
            principal = Principal(user.id, org.id, Role.EDITOR, session_id="direct")
        async with db.sessions() as session:
            service = FormService(session, principal)
            form = await service.create(
                title="Intake", description="", fields=fields_from_json(fields)
            )
            published = await service.publish(form.id)
            assert published.public_id is not None
            return form.id, published.public_id
    finally:
        await db.dispose()
