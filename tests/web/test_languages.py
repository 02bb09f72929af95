"""A patient on a phone set to Spanish, the language switch, and staff writing a form's
Spanish texts in the builder (real Chromium, axe-core on every page checked)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select, update

from healthforms.db.engine import Database
from healthforms.forms.models import FormVersion
from healthforms.responses.models import ResponseRow
from tests.support.servers import ServerProcess
from tests.uploads.helpers import pdf_document, photo_with_gps
from tests.web.browser import Watch, check_page, new_context
from tests.web.seed import SeededUser, create_users, publish_form, run_async
from tests.web.test_public_pages import PHONE
from tests.web.test_upload_pages import choose

pytestmark = pytest.mark.browser

SPANISH_PHONE = {**PHONE, "locale": "es-ES"}
FIELDS: list[dict[str, Any]] = [
    {"id": "name", "type": "text", "label": "Full name", "required": True},
    {
        "id": "zip",
        "type": "text",
        "label": "ZIP code",
        "required": True,
        "pattern": "^[0-9]{5}$",
        "helpText": "Five digits",
    },
    {"id": "smoker", "type": "radio", "label": "Do you smoke?", "options": ["yes", "no"]},
    {"id": "consent", "type": "checkbox", "label": "I consent", "required": True},
]
SPANISH = {
    "es": {
        "title": "Datos del paciente",
        "fields": {
            "name": {"label": "Nombre completo"},
            "zip": {"label": "Código postal", "helpText": "Cinco cifras"},
            "smoker": {"label": "¿Fuma?", "options": ["sí", "no"]},
            "consent": {"label": "Doy mi consentimiento"},
        },
    }
}


async def _translate(database_url: str, form_id: str, translations: dict[str, Any]) -> None:
    db = Database.connect(database_url)
    try:
        async with db.sessions() as session, session.begin():
            await session.execute(
                update(FormVersion)
                .where(FormVersion.form_id == form_id)
                .values(translations=translations)
            )
    finally:
        await db.dispose()


async def _languages(database_url: str, form_id: str) -> list[str | None]:
    db = Database.connect(database_url)
    try:
        async with db.sessions() as session:
            query = select(ResponseRow.language).where(ResponseRow.form_id == form_id)
            return list((await session.execute(query)).scalars().all())
    finally:
        await db.dispose()


def _spanish_form(database_url: str) -> tuple[str, str]:
    (admin,) = create_users(database_url, [("Ada Admin", "admin")])
    form_id, public_id = publish_form(
        database_url, admin.organization_id, "Patient details", FIELDS
    )
    run_async(_translate(database_url, form_id, SPANISH))
    return form_id, public_id


def test_a_patient_on_a_spanish_phone_fills_in_and_sends_the_form_in_spanish(
    browser: Browser, server: ServerProcess, database_url: str
) -> None:
    form_id, public_id = _spanish_form(database_url)
    watch = Watch()
    context = new_context(browser, watch, **SPANISH_PHONE)
    page = context.new_page()
    page.goto(f"{server.base_url}/f/{public_id}")
    assert page.locator("html").get_attribute("lang") == "es"
    expect(page.get_by_role("heading", name="Datos del paciente")).to_be_visible()
    expect(page.get_by_text("Cinco cifras")).to_be_visible()
    # The description has no Spanish text: it is marked as the English it is.
    expect(page.locator("p.lead")).to_have_attribute("lang", "en")
    assert page.get_by_role("heading", name="Datos del paciente").get_attribute("lang") is None
    check_page(page, "languages-es-form")

    # The page's own check, in Spanish.
    page.get_by_role("button", name="Enviar").click()
    expect(page.locator("#q-name-error")).to_have_text("Es obligatorio")
    expect(page.locator("#error-summary")).to_contain_text("Revise sus respuestas")
    # Only the server can refuse the pattern: its 422 comes back in Spanish.
    page.get_by_label("Nombre completo").fill("Pilar Pérez")
    page.get_by_label("Código postal").fill("abc")
    page.get_by_label("sí").check()
    page.get_by_label("Doy mi consentimiento").check()
    page.get_by_role("button", name="Enviar").click()
    expect(page.locator("#q-zip-error")).to_have_text("No tiene el formato esperado")
    expect(page.locator("#q-zip")).to_have_attribute("aria-invalid", "true")
    check_page(page, "languages-es-server-error")

    page.get_by_label("Código postal").fill("28001")
    page.get_by_role("button", name="Enviar").click()
    expect(page.get_by_role("heading", name="Gracias, su formulario se ha enviado")).to_be_visible()
    expect(page.locator("#confirmation-code")).to_have_text(re.compile(r"^[A-Z2-9]{10}$"))
    check_page(page, "languages-es-confirmation")
    context.close()
    assert watch.unexpected(422) == []
    assert run_async(_languages(database_url, form_id)) == ["es"]


def test_the_language_switch_is_keyboard_operable_and_remembered(
    browser: Browser, server: ServerProcess, database_url: str
) -> None:
    _, public_id = _spanish_form(database_url)
    watch = Watch()
    context = new_context(browser, watch, **SPANISH_PHONE)
    page = context.new_page()
    page.goto(f"{server.base_url}/f/{public_id}")
    switch = page.locator("nav.lang-switch")
    expect(switch).to_contain_text("Idioma")
    expect(switch.locator('[aria-current="true"]')).to_have_text("Español")
    english = switch.get_by_role("link", name="English")
    assert english.get_attribute("lang") == "en" and english.get_attribute("hreflang") == "en"
    english.focus()
    page.keyboard.press("Enter")
    page.wait_for_url(f"{server.base_url}/f/{public_id}?lang=en")
    assert page.locator("html").get_attribute("lang") == "en"
    expect(page.get_by_role("heading", name="Patient details")).to_be_visible()
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    check_page(page, "languages-switch-en")
    # Remembered: the same link without the query stays English on a Spanish phone.
    page.goto(f"{server.base_url}/f/{public_id}")
    assert page.locator("html").get_attribute("lang") == "en"
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#q-name-error")).to_have_text("Is required")
    spanish = page.locator("nav.lang-switch").get_by_role("link", name="Español")
    assert spanish.get_attribute("lang") == "es"
    spanish.click()
    assert page.locator("html").get_attribute("lang") == "es"
    check_page(page)
    context.close()
    assert watch.unexpected() == []


def _sign_in(page: Page, base: str, user: SeededUser, next_path: str) -> None:
    page.goto(f"{base}/login?next={next_path}")
    page.get_by_label("Email").fill(user.email)
    page.get_by_label("Password").fill(user.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}{next_path}")


def test_staff_write_the_spanish_texts_in_the_builder(
    browser: Browser, server: ServerProcess, database_url: str
) -> None:
    (editor,) = create_users(database_url, [("Eddie Editor", "editor")])
    form_id, public_id = publish_form(database_url, editor.organization_id, "Check-in", FIELDS)
    watch = Watch()
    context = new_context(browser, watch)
    page = context.new_page()
    _sign_in(page, server.base_url, editor, f"/forms/{form_id}")
    expect(page.locator("#builder")).to_have_attribute("aria-busy", "false")
    page.get_by_text("Spanish texts (optional)").click()
    page.get_by_label("Title in Spanish").fill("Registro")
    page.locator("#tr-name-label").fill("Nombre completo")
    page.locator("#tr-zip-help").fill("Cinco cifras")
    page.get_by_label("Option “yes” in Spanish").fill("sí")
    check_page(page, "languages-builder")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#save-state")).to_contain_text("saved")
    page.get_by_role("button", name="Publish changes").click()
    expect(page.locator("#status-badge")).to_have_text("Published v2")
    context.close()

    patient = new_context(browser, watch, **SPANISH_PHONE)
    page = patient.new_page()
    page.goto(f"{server.base_url}/f/{public_id}")
    expect(page.get_by_role("heading", name="Registro")).to_be_visible()
    expect(page.get_by_label("Nombre completo")).to_be_visible()
    expect(page.get_by_text("Cinco cifras")).to_be_visible()
    expect(page.get_by_label("sí")).to_have_attribute("value", "yes")
    expect(page.get_by_label("no", exact=True)).to_have_attribute("value", "no")
    expect(page.get_by_label("ZIP code")).to_be_visible()  # no Spanish label: the form's own
    patient.close()
    assert watch.unexpected() == []


FILE_FIELDS: list[dict[str, Any]] = [
    {"id": "name", "type": "text", "label": "Full name"},
    {"id": "card", "type": "file", "label": "Insurance card", "accept": ["image"]},
    {"id": "papers", "type": "file", "label": "Referral", "maxFiles": 2, "maxSizeMb": 5},
]


def test_the_upload_control_and_the_saved_draft_speak_spanish(
    browser: Browser, server: ServerProcess, database_url: str
) -> None:
    (admin,) = create_users(database_url, [("Ada Admin", "admin")])
    _, public_id = publish_form(database_url, admin.organization_id, "Files", FILE_FIELDS)
    watch = Watch()
    context = new_context(browser, watch, **SPANISH_PHONE)
    page = context.new_page()
    page.goto(f"{server.base_url}/f/{public_id}")
    assert page.locator("html").get_attribute("lang") == "es"
    expect(page.locator("#q-card-limits")).to_have_text("Fotos, un archivo, de 10 MB como máximo.")
    expect(page.locator("#q-papers-limits")).to_have_text(
        "Fotos o documentos PDF, hasta 2 archivos, de 5 MB como máximo cada uno."
    )
    expect(page.locator("#q-card-list")).to_have_attribute(
        "aria-label", "Archivos añadidos: Insurance card"
    )
    expect(page.locator("#draft-resume summary")).to_have_text("Continuar un formulario guardado")
    # A PDF dressed as a photo: the server's refusal, in Spanish, next to the field.
    choose(page, "card", "tarjeta.jpg", "image/jpeg", pdf_document())
    expect(page.locator("#q-card-error")).to_have_text("Debe ser una foto (JPEG, PNG o WebP)")
    expect(page.locator("#q-card-status")).to_have_text("tarjeta.jpg no se subió.")
    choose(page, "card", "tarjeta.jpg", "image/jpeg", photo_with_gps())
    expect(page.locator("#q-card-status")).to_have_text("tarjeta.jpg se subió.")
    item = page.locator("#q-card-list .file-item")
    expect(item).to_contain_text("tarjeta.jpg (foto,")
    expect(item.get_by_role("button", name="Quitar tarjeta.jpg")).to_be_visible()
    check_page(page, "languages-es-upload")

    page.get_by_role("button", name="Guardar y continuar más tarde").click()
    saved = page.locator("#draft-saved")
    expect(saved).to_be_focused()
    expect(page.get_by_role("region", name="Sus respuestas están guardadas")).to_be_visible()
    expect(saved).to_contain_text("Puede continuar en este u otro dispositivo hasta el")
    expect(saved).to_contain_text("Los archivos que añadió se guardan con sus respuestas")
    expect(page.get_by_label("Enlace para continuar")).not_to_have_value("")
    page.get_by_role("button", name="Copiar el enlace").click()
    expect(page.locator("#draft-copy-status")).to_have_text(
        re.compile(r"^(Enlace copiado\.|Pulse Ctrl\+C .*)$")
    )
    check_page(page, "languages-es-draft-saved")
    page.get_by_role("button", name="Volver al formulario").click()

    # The code box's own refusal, in Spanish.
    page.get_by_text("Continuar un formulario guardado").click()
    page.get_by_role("button", name="Continuar", exact=True).click()
    expect(page.locator("#draft-code-error")).to_have_text(
        "Escriba el código de su formulario guardado."
    )
    page.get_by_label("Código de su formulario guardado").fill("0000000000")
    page.get_by_role("button", name="Continuar", exact=True).click()
    expect(page.locator("#draft-code-error")).to_have_text(
        "Ningún formulario guardado coincide con este código. "
        "Revise el código e inténtelo de nuevo."
    )
    check_page(page, "languages-es-draft-code")
    context.close()
    assert watch.unexpected(404, 422) == []
