"""A patient's request link in Spanish: the page, the closed page, the API's messages,
and the language its response records (docs/languages.md)."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from healthforms.db.engine import Database
from healthforms.responses.models import ResponseRow
from tests.patient_requests.helpers import (
    answers,
    create_request,
    expire,
    fresh_nonce,
    token_of,
)
from tests.support.apps import asgi_client
from tests.support.response_factory import PublishedForm

SPANISH = {"Accept-Language": "es-ES,es;q=0.9,en;q=0.5", "Accept": "text/html"}


async def test_the_request_page_and_its_answers_speak_spanish(
    app: FastAPI, db: Database, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    created = await create_request(admin, clinic.form_id)
    token = token_of(created["link"])
    async with asgi_client(app) as phone:
        page = await phone.get(f"/r/{token}", headers=SPANISH)
        assert page.status_code == 200
        assert '<html lang="es"' in page.text
        assert "<title>Su formulario de " in page.text
        assert ">Enviar</button>" in page.text
        nonce = await fresh_nonce(app, token)
        path = f"/api/public/requests/{token}/responses"
        refused = await phone.post(
            path,
            json={"nonce": nonce, "answers": answers(dob="04/03/1979")},
            headers={"Accept-Language": "es"},
        )
        assert refused.status_code == 422
        assert refused.json()["fields"] == {"dob": "debe ser una fecha (aaaa-mm-dd)"}
        sent = await phone.post(path, json={"nonce": nonce, "answers": answers(), "language": "es"})
        assert sent.status_code == 201, sent.text
    async with db.sessions() as session:
        query = select(ResponseRow.language).where(ResponseRow.form_id == clinic.form_id)
        assert list((await session.execute(query)).scalars()) == ["es"]


async def test_a_closed_request_says_so_in_spanish(
    app: FastAPI, db: Database, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    created = await create_request(admin, clinic.form_id)
    token = token_of(created["link"])
    await expire(db, created["request"]["id"])
    async with asgi_client(app) as phone:
        page = await phone.get(f"/r/{token}", headers=SPANISH)
        api = await phone.get(f"/api/public/requests/{token}", headers={"Accept-Language": "es"})
    assert page.status_code == 410
    assert "Este enlace ya se usó o ha caducado." in page.text
    assert api.status_code == 410
    assert api.json() == {
        "error": "Este enlace ya se usó o ha caducado. Póngase en contacto con su clínica.",
        "code": "request_closed",
    }
