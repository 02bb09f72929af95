"""Issue 15's acceptance journey, end to end in Chromium on a phone, in Spanish.

A clinic builds a paged intake through the API: a page shown only to smokers, an insurance
card photo, the PHQ-9 with its published scoring and an `any` condition. A patient whose
phone reads Spanish fills in the first pages, adds the photo, saves, and finishes on
another device from the link; the score is never shown to them, and Back after the
confirmation shows no answer. Staff then read the response with its score and photo, in
the list, on the page and in the PDF.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, FilePayload, Page, expect
from pypdf import PdfReader

from healthforms.forms.templates.phq9 import TEMPLATE as PHQ9
from tests.support.servers import ServerProcess
from tests.uploads.helpers import photo_with_gps
from tests.web.browser import Watch, check_page, new_context
from tests.web.conftest import mailbox  # noqa: F401 - the server fixture's SMTP
from tests.web.seed import create_users
from tests.web.test_export_pages import sign_in
from tests.web.test_upload_pages import images_drawn

pytestmark = pytest.mark.browser

SPANISH_PHONE = {
    "viewport": {"width": 390, "height": 844},
    "is_mobile": True,
    "has_touch": True,
    "locale": "es-ES",
}
# PHQ-9 answers (option index per item) giving 3+3+2+2+1+1+1+1+0 = 14: "Moderate".
MODERATE = [3, 3, 2, 2, 1, 1, 1, 1, 0]
FRECUENCIA = ["Ningún día", "Varios días", "Más de la mitad de los días", "Casi todos los días"]

FIELDS: list[dict[str, Any]] = [
    {"id": "about", "type": "pageBreak", "label": "About you"},
    {"id": "name", "type": "text", "label": "Full name", "required": True, "identifies": "name"},
    {"id": "smoker", "type": "radio", "label": "Do you smoke?", "options": ["Yes", "No"]},
    {
        "id": "smoking",
        "type": "pageBreak",
        "label": "Smoking",
        "showWhen": {"field": "smoker", "equals": "Yes"},
    },
    {"id": "packs", "type": "number", "label": "Packs a day", "required": True, "min": 0},
    {"id": "insurance", "type": "pageBreak", "label": "Insurance"},
    {"id": "card", "type": "file", "label": "Insurance card", "accept": ["image"]},
    {"id": "mood", "type": "pageBreak", "label": "Mood"},
    *[f for f in PHQ9["fields"] if f["id"] != "difficulty"],
    {"id": "end", "type": "pageBreak", "label": "Last questions"},
    {
        "id": "support",
        "type": "textarea",
        "label": "Who can we call to support you?",
        "showWhen": {
            "any": [
                {"field": "q9", "notEquals": "Not at all"},
                {"field": "q2", "equals": "Nearly every day"},
            ]
        },
    },
    {"id": "consent", "type": "paragraph", "label": "I agree to be treated by the clinic."},
    {"id": "agree", "type": "checkbox", "label": "I agree", "required": True},
]

TRANSLATIONS = {
    "es": {
        "title": "Admisión y estado de ánimo",
        "fields": {
            "about": {"label": "Sobre usted"},
            "name": {"label": "Nombre completo"},
            "smoker": {"label": "¿Fuma?", "options": ["Sí", "No"]},
            "smoking": {"label": "Tabaco"},
            "packs": {"label": "Paquetes al día"},
            "insurance": {"label": "Seguro"},
            "card": {"label": "Tarjeta del seguro"},
            "mood": {"label": "Estado de ánimo"},
            **{f"q{n}": {"options": FRECUENCIA} for n in range(1, 10)},
            "end": {"label": "Últimas preguntas"},
            "support": {"label": "¿A quién podemos llamar para apoyarle?"},
            "agree": {"label": "Estoy de acuerdo"},
        },
    }
}

CREATE_AND_PUBLISH = """async (body) => {
  const token = (await (await fetch('/api/auth/csrf-token')).json()).csrfToken;
  const headers = { 'Content-Type': 'application/json', 'X-CSRF-Token': token };
  const created = await fetch('/api/forms', {
    method: 'POST', headers, body: JSON.stringify(body) });
  const form = await created.json();
  if (created.status !== 201) return { status: created.status, form };
  const published = await fetch(`/api/forms/${form.id}/publish`, { method: 'POST', headers });
  return { status: published.status, form: await published.json() };
}"""


@pytest.fixture
def watch() -> Iterator[Watch]:
    yield Watch()


def progress(page: Page) -> Any:
    return page.locator("#progress-text")


def next_page(page: Page) -> None:
    page.get_by_role("button", name="Siguiente").click()


def test_a_spanish_phone_finishes_a_paged_scored_form_with_a_photo_and_a_resume(
    browser: Browser, server: ServerProcess, database_url: str, watch: Watch
) -> None:
    base = server.base_url
    (admin,) = create_users(database_url, [("Ada Admin", "admin")])
    staff_ctx = new_context(browser, watch)
    staff = staff_ctx.new_page()
    sign_in(staff, base, admin, "/forms")
    made = staff.evaluate(
        CREATE_AND_PUBLISH,
        {"title": "Intake and mood", "fields": FIELDS, "translations": TRANSLATIONS},
    )
    assert made["status"] == 200, made
    form_id, public_id = made["form"]["id"], made["form"]["publicId"]

    # The patient's phone reads Spanish: the page, its progress and the form's own texts.
    first_ctx = new_context(browser, watch, **SPANISH_PHONE)
    phone = first_ctx.new_page()
    phone.goto(f"{base}/f/{public_id}")
    expect(phone.locator("html")).to_have_attribute("lang", "es")
    expect(phone.get_by_role("heading", name="Admisión y estado de ánimo")).to_be_visible()
    expect(progress(phone)).to_have_text("Página 1 de 4")  # "Tabaco" skipped until "Sí"
    phone.get_by_label("Nombre completo").fill("Lucía Fernández")
    phone.get_by_label("Sí").check()
    expect(progress(phone)).to_have_text("Página 1 de 5")
    check_page(phone, "journey-es-1")
    next_page(phone)
    expect(phone.get_by_role("heading", name="Tabaco")).to_be_focused()
    next_page(phone)  # per-page check, in the server's words in Spanish
    expect(phone.locator("#q-packs-error")).to_have_text("Es obligatorio")
    phone.get_by_label("Paquetes al día").fill("1")
    next_page(phone)
    expect(progress(phone)).to_have_text("Página 3 de 5")
    payload: FilePayload = {
        "name": "tarjeta.jpg",
        "mimeType": "image/jpeg",
        "buffer": photo_with_gps((640, 400)),
    }
    phone.locator("#q-card").set_input_files(files=[payload])
    expect(phone.locator("#q-card-list li")).to_have_count(1)

    # Save and continue later; the link opens on another device.
    phone.locator("#save-draft").click()
    expect(phone.locator("#draft-saved")).to_be_visible()
    link = phone.locator("#draft-link").input_value()
    assert re.search(r"/f/[^#]+#", link), link
    check_page(phone, "journey-es-saved")
    first_ctx.close()

    second_ctx = new_context(browser, watch, **SPANISH_PHONE)
    other = second_ctx.new_page()
    other.goto(link)
    expect(other.get_by_label("Nombre completo")).to_have_value("Lucía Fernández")
    expect(other.get_by_label("Sí")).to_be_checked()
    for _ in range(2):
        next_page(other)
    expect(other.get_by_label("Paquetes al día")).to_be_hidden()
    expect(progress(other)).to_have_text("Página 3 de 5")
    expect(other.locator("#q-card-list li")).to_have_count(1)  # the photo came along
    next_page(other)
    expect(progress(other)).to_have_text("Página 4 de 5")
    for number, choice in enumerate(MODERATE, start=1):
        other.locator(f"#q-q{number}-{choice}").check()
    expect(other.locator("#q-q2-3 + label")).to_have_text("Casi todos los días")
    # The score is the clinic's: nothing of it is on the patient's page.
    expect(other.locator('[data-field-id="phq9_total"]')).to_have_count(0)
    next_page(other)
    # any: shown because item 2 was "Nearly every day" (item 9 was "Not at all").
    expect(other.get_by_label("¿A quién podemos llamar para apoyarle?")).to_be_visible()
    other.get_by_label("¿A quién podemos llamar para apoyarle?").fill("Mi hermana")
    other.get_by_label("Estoy de acuerdo").check()
    check_page(other, "journey-es-last")
    other.get_by_role("button", name="Enviar").click()
    expect(other.locator("#confirmation-code")).to_be_visible()
    expect(other.locator("#confirmation")).not_to_contain_text("14")
    check_page(other, "journey-es-sent")
    # Back on the shared phone: "already sent" over an empty form.
    other.go_back()
    expect(other.locator("#already-sent")).to_be_visible()
    expect(other.get_by_label("Nombre completo")).to_have_value("")
    second_ctx.close()

    # Staff: the score in the list, the photo and the score on the page and in the PDF.
    listed = staff_ctx.request.get(f"{base}/api/forms/{form_id}/responses").json()
    (row,) = listed["responses"]
    staff.goto(f"{base}/forms/{form_id}/responses")
    expect(staff.locator("#responses-table")).to_contain_text("Moderate")
    staff.goto(f"{base}/responses/{row['id']}")
    expect(staff.locator('[data-field-id="phq9_total"]')).to_contain_text("14")
    expect(staff.locator('[data-field-id="card"] img.file-photo')).to_be_visible()
    check_page(staff, "journey-staff-response")
    staff.get_by_role("button", name="Generate PDF").click()
    staff.wait_for_url(f"{base}/responses/{row['id']}?pdf=generated")
    with staff.expect_download() as info:
        staff.get_by_role("link", name="Download PDF", exact=True).click()
    printed = info.value.path().read_bytes()
    text = "".join(p.extract_text() or "" for p in PdfReader(io.BytesIO(printed)).pages)
    assert "Moderate" in text and "14" in text
    assert "Lucía Fernández" in text
    assert images_drawn(printed) >= 1
    staff_ctx.close()
    assert watch.unexpected() == []
