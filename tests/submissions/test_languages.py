"""Patients in Spanish: the page, its switch, the 422 messages, per-language form texts
and the language each response records (docs/languages.md)."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI

from tests.submissions.helpers import fetch_nonce, good_answers, stored_rows, submit

FIELDS: list[dict[str, Any]] = [
    {"id": "name", "type": "text", "label": "Full name", "required": True, "max": 20},
    {"id": "age", "type": "number", "label": "Age", "min": 18},
    {"id": "smoker", "type": "radio", "label": "Do you smoke?", "options": ["yes", "no"]},
    {
        "id": "packs",
        "type": "number",
        "label": "Packs a day",
        "showWhen": {"field": "smoker", "equals": "yes"},
    },
    {"id": "consent", "type": "checkbox", "label": "I consent", "required": True},
]
SPANISH = {
    "es": {
        "title": "Admisión",
        "description": "Complételo antes de su visita.",
        "fields": {
            "name": {"label": "Nombre completo", "helpText": "Como en su documento"},
            "smoker": {"label": "¿Fuma?", "options": ["sí", "no"]},
            "consent": {"label": "Doy mi consentimiento"},
        },
    }
}


async def _publish(http: httpx.AsyncClient, translations: Any = SPANISH) -> dict[str, Any]:
    created = await http.post(
        "/api/forms", json={"title": "Intake", "fields": FIELDS, "translations": translations}
    )
    assert created.status_code == 201, created.text
    published = await http.post(f"/api/forms/{created.json()['id']}/publish")
    assert published.status_code == 200, published.text
    form: dict[str, Any] = published.json()
    return form


async def test_a_422_speaks_spanish_when_asked_and_english_by_default(
    editor_http: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    form = await _publish(editor_http)
    nonce = await fetch_nonce(client, form["publicId"])
    path = f"/api/public/forms/{form['publicId']}/responses"
    bad = {"nonce": nonce, "answers": {"name": "x" * 30, "age": 3}}
    english = await client.post(path, json=bad)
    assert english.status_code == 422
    assert english.json()["fields"] == {
        "name": "must be at most 20 characters",
        "age": "must be at least 18",
        "consent": "is required",
    }
    assert english.json()["error"] == "Some fields are not valid."
    spanish = await client.post(path, json=bad, headers={"Accept-Language": "es-MX,es;q=0.9"})
    assert spanish.status_code == 422
    assert spanish.json() == {
        "error": "Algunos campos no son válidos.",
        "code": "validation_error",
        "fields": {
            "name": "debe tener como máximo 20 caracteres",
            "age": "debe ser como mínimo 18",
            "consent": "es obligatorio",
        },
    }
    french = await client.post(path, json=bad, headers={"Accept-Language": "fr"})
    assert french.json()["fields"]["consent"] == "is required"


async def test_a_nonce_error_speaks_spanish(
    editor_http: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    form = await _publish(editor_http)
    reply = await client.post(
        f"/api/public/forms/{form['publicId']}/responses",
        json={"nonce": "forged", "answers": {}},
        headers={"Accept-Language": "es"},
    )
    assert reply.status_code == 400
    assert reply.json()["code"] == "nonce_invalid"
    assert reply.json()["error"].startswith("Este enlace del formulario ha caducado")


async def test_the_response_records_the_language_it_was_answered_in(
    editor_http: httpx.AsyncClient, client: httpx.AsyncClient, app: FastAPI
) -> None:
    form = await _publish(editor_http)
    public_id = form["publicId"]
    path = f"/api/public/forms/{public_id}/responses"
    nonce = await fetch_nonce(client, public_id)
    # The option is answered by its canonical value whatever the language shown.
    answers = good_answers(smoker="yes", packs=2)
    body = {"nonce": nonce, "answers": answers, "language": "es"}
    assert (await client.post(path, json=body)).status_code == 201
    nonce = await fetch_nonce(client, public_id)
    by_header = await client.post(
        path, json={"nonce": nonce, "answers": answers}, headers={"Accept-Language": "es-ES"}
    )
    assert by_header.status_code == 201
    assert (
        await submit(client, public_id, await fetch_nonce(client, public_id), answers)
    ).is_success
    nonce = await fetch_nonce(client, public_id)
    unknown = await client.post(path, json={"nonce": nonce, "answers": answers, "language": "xx"})
    assert unknown.status_code == 201
    languages = sorted(row.language or "" for row in await stored_rows(app, form["id"]))
    assert languages == ["en", "en", "es", "es"]


async def test_form_translations_are_validated(editor_http: httpx.AsyncClient) -> None:
    async def refused(translations: Any) -> dict[str, str]:
        reply = await editor_http.post(
            "/api/forms", json={"title": "T", "fields": FIELDS, "translations": translations}
        )
        assert reply.status_code == 422, reply.text
        fields: dict[str, str] = reply.json()["fields"]
        return fields

    assert "translations.fr" in await refused({"fr": {"title": "Admission"}})
    assert "translations.en" in await refused({"en": {"title": "Intake"}})
    assert "translations.es.fields.nobody" in await refused(
        {"es": {"fields": {"nobody": {"label": "x"}}}}
    )
    assert "translations.es.fields.smoker.options" in await refused(
        {"es": {"fields": {"smoker": {"options": ["sí"]}}}}
    )
    assert "translations.es.fields.name.options" in await refused(
        {"es": {"fields": {"name": {"options": ["a"]}}}}
    )
    assert "translations.es.fields.name.label" in await refused(
        {"es": {"fields": {"name": {"label": "x" * 501}}}}
    )
    assert "translations.es.title" in await refused({"es": {"title": "x" * 201}})
    assert "translations.es" in await refused({"es": {"colour": "red"}})
    assert "translations" in await refused(["es"])
    # Empty texts fall back to the form's own: not stored.
    created = await editor_http.post(
        "/api/forms",
        json={
            "title": "T",
            "fields": FIELDS,
            "translations": {"es": {"title": " ", "fields": {"name": {"label": ""}}}},
        },
    )
    assert created.status_code == 201
    assert "translations" not in created.json()
    # A save that keeps the fields is checked against the stored ones.
    form_id = created.json()["id"]
    saved = await editor_http.put(f"/api/forms/{form_id}", json={"translations": SPANISH})
    assert saved.status_code == 200, saved.text
    assert saved.json()["translations"] == SPANISH
    wrong = await editor_http.put(
        f"/api/forms/{form_id}", json={"translations": {"es": {"fields": {"x": {"label": "y"}}}}}
    )
    assert wrong.status_code == 422


async def test_the_public_api_serves_the_translations(
    editor_http: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    form = await _publish(editor_http)
    body = (await client.get(f"/api/public/forms/{form['publicId']}")).json()
    assert body["form"]["translations"] == SPANISH
    assert body["form"]["fields"] == form["fields"]  # canonical texts and values unchanged


async def test_the_page_is_in_spanish_with_canonical_values_and_a_switch(
    editor_http: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    form = await _publish(editor_http)
    page_path = f"/f/{form['publicId']}"
    spanish = await client.get(page_path, headers={"Accept-Language": "es-MX"})
    assert spanish.status_code == 200
    html = spanish.text
    assert '<html lang="es"' in html
    assert "data-i18n=" in html
    for text in ("Admisión", "Nombre completo", "Como en su documento", "¿Fuma?", "Enviar"):
        assert text in html
    # Shown in Spanish, answered by the canonical option.
    assert 'value="yes"' in html and ">sí</label>" in html
    assert "Packs a day" in html  # untranslated texts keep the form's own
    assert 'href="?lang=en" lang="en" hreflang="en">English</a>' in html
    assert 'lang="es" aria-current="true">Español</span>' in html
    assert "set-cookie" not in spanish.headers

    english = await client.get(page_path, headers={"Accept-Language": "fr"})
    assert '<html lang="en"' in english.text and "Full name" in english.text
    assert "data-i18n=" not in english.text

    switched = await client.get(f"{page_path}?lang=es", headers={"Accept-Language": "en"})
    assert '<html lang="es"' in switched.text
    cookie = switched.headers["set-cookie"]
    assert cookie.startswith("lang=es;") and "HttpOnly" in cookie and "SameSite=lax" in cookie
    client.cookies.clear()  # each request below says which cookie it brings
    remembered = await client.get(page_path, headers={"Cookie": "lang=es"})
    assert '<html lang="es"' in remembered.text
    back = await client.get(f"{page_path}?lang=en", headers={"Cookie": "lang=es"})
    assert '<html lang="en"' in back.text
    assert back.headers["set-cookie"].startswith("lang=en;")
    client.cookies.clear()
    ignored = await client.get(f"{page_path}?lang=xx", headers={"Cookie": "lang=zz"})
    assert ignored.status_code == 200 and '<html lang="en"' in ignored.text


async def test_error_pages_of_patient_links_speak_spanish(client: httpx.AsyncClient) -> None:
    html = {"Accept": "text/html", "Accept-Language": "es"}
    missing = await client.get("/f/no-such-form", headers=html)
    assert missing.status_code == 404
    assert "Página no encontrada" in missing.text
    assert "Este enlace de formulario no es válido." in missing.text
    closed = await client.get("/r/no-such-token", headers=html)
    assert closed.status_code == 404
    assert "Este enlace no se puede usar" in closed.text
    staff = await client.get("/nowhere", headers=html)
    assert "Page not found" in staff.text  # staff pages stay English
