"""Rows the browser tests start from, written straight to the test database.

Users are created through the identity service (as `healthforms user create` does);
forms as the forms code stores a published one (a Form plus its frozen FormVersion).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import select

from healthforms.config import Settings
from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from healthforms.forms.models import Form, FormVersion
from healthforms.identity import service
from healthforms.security.principal import Role
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.support.response_factory import PublishedForm, create_response, signature_data_url

T = TypeVar("T")

# One field of each type, with help text, options, a showWhen and a consent box.
ALL_TYPES_FIELDS: list[dict[str, Any]] = [
    {"id": "full_name", "type": "text", "label": "Full name", "required": True},
    {
        "id": "history",
        "type": "textarea",
        "label": "Medical history",
        "required": False,
        "helpText": "Operations, long-term conditions, anything we should know.",
    },
    {"id": "email", "type": "email", "label": "Email", "required": True},
    {"id": "phone", "type": "phone", "label": "Phone", "required": False},
    {"id": "age", "type": "number", "label": "Age", "required": True, "min": 0, "max": 130},
    {"id": "dob", "type": "date", "label": "Date of birth", "required": False},
    {
        "id": "visit",
        "type": "select",
        "label": "Reason for visit",
        "required": True,
        "options": ["Check-up", "Injury", "Other"],
    },
    {
        "id": "other_reason",
        "type": "text",
        "label": "Please describe",
        "required": True,
        "showWhen": {"field": "visit", "equals": "Other"},
    },
    {
        "id": "smoker",
        "type": "radio",
        "label": "Do you smoke?",
        "required": True,
        "options": ["Yes", "No"],
    },
    {
        "id": "allergies",
        "type": "checkbox",
        "label": "Allergies",
        "required": False,
        "options": ["Penicillin", "Latex", "Nuts"],
    },
    {
        "id": "consent",
        "type": "checkbox",
        "label": "I consent to treatment",
        "required": True,
    },
    {"id": "signature", "type": "signature", "label": "Signature", "required": True},
]


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine in a thread of its own: Playwright's sync API owns this thread's loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


@dataclass(frozen=True)
class SeededUser:
    id: str
    email: str
    password: str
    name: str
    role: str
    organization_id: str


async def _create_users(
    database_url: str, org_name: str, specs: list[tuple[str, str]]
) -> list[SeededUser]:
    db = Database.connect(database_url)
    created: list[SeededUser] = []
    try:
        async with db.sessions() as session:
            org, _ = await service.get_or_create_organization(session, org_name)
            await session.commit()
            for name, role in specs:
                email = f"{role}-{secrets.token_hex(4)}@clinic.example"
                password = f"pw-{secrets.token_hex(8)}"
                user = await service.create_user(
                    session,
                    organization_id=org.id,
                    email=email,
                    name=name,
                    password=password,
                    role=Role(role),
                )
                created.append(SeededUser(user.id, email, password, name, role, org.id))
    finally:
        await db.dispose()
    return created


def create_users(database_url: str, specs: list[tuple[str, str]]) -> list[SeededUser]:
    """An organisation of its own with these (name, role) users."""
    org_name = f"Clinic {secrets.token_hex(4)}"
    return run_async(_create_users(database_url, org_name, specs))


async def _publish_form(
    database_url: str, organization_id: str, title: str, fields: list[dict[str, Any]]
) -> tuple[str, str]:
    db = Database.connect(database_url)
    public_id = secrets.token_urlsafe(12)
    try:
        async with db.sessions() as session:
            form = Form(
                organization_id=organization_id,
                title=title,
                description="Please fill this in before your appointment.",
                fields=fields,
                status="published",
                revision=1,
                version=1,
                public_id=public_id,
                has_unpublished_changes=False,
            )
            session.add(form)
            await session.flush()
            session.add(
                FormVersion(
                    form_id=form.id,
                    version=1,
                    title=title,
                    description=form.description,
                    fields=fields,
                )
            )
            await session.commit()
            return form.id, public_id
    finally:
        await db.dispose()


def publish_form(
    database_url: str, organization_id: str, title: str, fields: list[dict[str, Any]]
) -> tuple[str, str]:
    """A published form (version 1) inserted directly; returns (form id, public id)."""
    return run_async(_publish_form(database_url, organization_id, title, fields))


async def _create_response_row(database_url: str, form_id: str) -> str:
    db = Database.connect(database_url)
    try:
        async with db.sessions() as session:
            form = await session.get(Form, form_id)
            assert form is not None, form_id
            version = (
                await session.execute(
                    select(FormVersion).where(
                        FormVersion.form_id == form_id, FormVersion.version == form.version
                    )
                )
            ).scalar_one()
            published = PublishedForm(form.organization_id, form.id, version.id, version.version)
        settings = Settings(encryption_key=TEST_ENCRYPTION_KEY)
        answers = {
            "full_name": "Pat Patient",
            "email": "pat@example.com",
            "age": 42,
            "visit": "Check-up",
            "smoker": "No",
            "allergies": ["Latex"],
            "consent": True,
            "signature": signature_data_url(),
        }
        return await create_response(db, KeyRing.from_settings(settings), published, answers)
    finally:
        await db.dispose()


def create_response_row(database_url: str, form_id: str) -> str:
    """A response to the form's current version, sealed with the test servers' key, as
    submissions stores one; returns its id."""
    return run_async(_create_response_row(database_url, form_id))
