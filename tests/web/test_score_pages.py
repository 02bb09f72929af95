"""Scores and templates in Chromium: staff make a PHQ-9 from the gallery (keyboard only),
publish it, a patient answers on a phone and never sees the score, staff read the score
and band on the response list, the response and in the PDF; a copy of the form that says
showPatient shows the patient their result after sending."""

from __future__ import annotations

import io
import re
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect
from pypdf import PdfReader

from tests.support.servers import ServerProcess
from tests.web.browser import Watch, check_page, new_context
from tests.web.conftest import require_api
from tests.web.seed import SeededUser, create_users
from tests.web.test_public_pages import PHONE

pytestmark = pytest.mark.browser

DESKTOP = {"viewport": {"width": 1280, "height": 900}, "accept_downloads": True}
NEEDED = (
    "/api/form-templates",
    "/api/forms",
    "/api/forms/{id}/publish",
    "/api/forms/{id}/duplicate",
    "/api/public/forms/{publicId}/responses",
    "/api/forms/{id}/responses",
)
FREQUENCY = ["Not at all", "Several days", "More than half the days", "Nearly every day"]
# Gives 14: "Moderate" (PHQ-9 10-14).
MODERATE = [3, 3, 2, 2, 1, 1, 1, 1, 0]

PUT_FIELDS = """async ([id, changes]) => {
  const token = (await (await fetch('/api/auth/csrf-token')).json()).csrfToken;
  const form = await (await fetch(`/api/forms/${id}`)).json();
  const fields = form.fields.map((f) => (f.type === 'score'
    ? { ...f, score: { ...f.score, ...changes } } : f));
  const reply = await fetch(`/api/forms/${id}`, {
    method: 'PUT', headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': token },
    body: JSON.stringify({ fields }) });
  return reply.status;
}"""


@pytest.fixture(scope="module")
def editor(server: ServerProcess, database_url: str) -> SeededUser:
    (user,) = create_users(database_url, [("Sam Scorer", "editor")])
    return user


@pytest.fixture
def watch() -> Iterator[Watch]:
    yield Watch()


def sign_in(page: Page, base: str, user: SeededUser) -> None:
    page.goto(f"{base}/login")
    page.get_by_label("Email").fill(user.email)
    page.get_by_label("Password").fill(user.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/forms")


def answer_phq9(page: Page, items: list[int]) -> None:
    for number, value in enumerate(items, start=1):
        page.locator(f"#q-q{number}-{value}").check()
    page.locator("#q-difficulty-1").check()


def public_url_of(page: Page) -> str:
    page.get_by_role("button", name="Publish").click()
    link = page.get_by_label("Public link for patients")
    expect(link).to_have_value(re.compile(r"/f/.+"))
    return link.input_value()


def test_phq9_from_the_gallery_scored_for_staff_never_shown_to_the_patient(
    browser: Browser,
    server: ServerProcess,
    api_paths: set[str],
    editor: SeededUser,
    watch: Watch,
) -> None:
    require_api(api_paths, *NEEDED)
    base = server.base_url
    staff_ctx = new_context(browser, watch, **DESKTOP)
    page = staff_ctx.new_page()
    sign_in(page, base, editor)
    page.get_by_role("link", name=re.compile("New form|Create your first form")).first.click()
    page.wait_for_url(f"{base}/forms/new")

    # The gallery is a labelled radio group: reached and chosen with the keyboard alone.
    gallery = page.get_by_role("group", name="Start from")
    expect(gallery.get_by_role("radio")).to_have_count(7)
    blank = page.get_by_label("Blank form")
    blank.focus()
    phq9 = page.get_by_label("Patient Health Questionnaire (PHQ-9)")
    for _ in range(10):
        if phq9.is_checked():
            break
        page.keyboard.press("ArrowDown")
    expect(phq9).to_be_checked()
    expect(phq9).to_be_focused()
    title = f"PHQ-9 {secrets.token_hex(3)}"
    expect(page.get_by_label("Title")).to_have_value("Patient Health Questionnaire (PHQ-9)")
    page.get_by_label("Title").fill(title)
    check_page(page, "form-new-gallery")
    page.get_by_role("button", name="Create from template").click()
    page.wait_for_url(re.compile(rf"{re.escape(base)}/forms/frm_[^/]+$"))
    form_id = page.url.rsplit("/", 1)[1]
    expect(page.locator(".field-card")).to_have_count(12)
    expect(page.locator("#preview .score-preview")).to_contain_text("staff only")
    expect(page.locator(".score-summary")).to_contain_text("10–14 Moderate")
    first = page.locator(".field-card").nth(1)  # q1, after the instructions paragraph
    expect(first.get_by_label("Option scores (optional)")).to_have_value("0, 1, 2, 3")
    # A save from the builder keeps the scoring as the template had it.
    page.get_by_label("Description").fill("Please answer every question.")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#save-state")).to_contain_text("saved")
    saved = staff_ctx.request.get(f"{base}/api/forms/{form_id}").json()
    assert saved["fields"][1]["optionScores"] == [0, 1, 2, 3]
    assert saved["fields"][0]["type"] == "paragraph"
    assert saved["fields"][-1]["score"]["bands"][2] == {"min": 10, "max": 14, "label": "Moderate"}
    public_url = public_url_of(page)
    check_page(page, "builder-phq9")

    # The patient, on a phone: nine questions, no score anywhere, before or after.
    patient_ctx = new_context(browser, watch, **PHONE)
    patient = patient_ctx.new_page()
    patient.goto(public_url)
    expect(patient.locator('.q[data-type="radio"]')).to_have_count(10)
    assert "PHQ-9 total" not in patient.content()
    assert "Moderate" not in patient.content()
    answer_phq9(patient, MODERATE)
    check_page(patient, "patient-phq9-filled")
    patient.get_by_role("button", name="Send").click()
    expect(patient.locator("#confirmation-code")).to_be_visible()
    expect(patient.locator("#confirmation-scores")).to_be_hidden()
    assert "Moderate" not in patient.locator("#confirmation").inner_text()
    check_page(patient, "patient-phq9-confirmation")
    patient_ctx.close()

    # Staff: the list shows the score and band, the response too, and the PDF prints them.
    page.goto(f"{base}/forms/{form_id}/responses")
    row = page.locator("#responses-table tbody tr")
    expect(row).to_have_count(1)
    score_cell = row.locator('td[data-label="Score"]')
    expect(score_cell).to_contain_text("PHQ-9 total: 14")
    expect(score_cell.locator(".score-band")).to_have_text("Moderate")
    expect(page.get_by_role("columnheader", name="Score")).to_be_visible()
    check_page(page, "responses-phq9")
    page.get_by_role("link", name="Open response").click()
    total = page.locator('.answer[data-field-id="phq9_total"] dd')
    expect(total.locator(".score-value")).to_have_text("14")
    expect(total.locator(".score-band")).to_have_text("Moderate")
    expect(page.locator('.answer[data-field-id="q1"] dd')).to_have_text("Nearly every day")
    check_page(page, "response-phq9")
    page.get_by_role("button", name="Generate PDF").click()
    expect(page.get_by_text("The PDF is ready")).to_be_visible()
    with page.expect_download() as info:
        page.get_by_role("link", name="Download PDF").click()
    data = info.value.path().read_bytes()
    text = " ".join(p.extract_text() or "" for p in PdfReader(io.BytesIO(data)).pages)
    assert "PHQ-9 total" in text and "14 — Moderate" in text

    # Duplicate from the forms list, then let this copy show the patient the result.
    page.goto(f"{base}/forms")
    check_page(page, "forms-list-duplicate")
    page.get_by_role("button", name=f"Duplicate {title}").click()
    page.wait_for_url(re.compile(rf"{re.escape(base)}/forms/frm_[^/]+$"))
    copy_id = page.url.rsplit("/", 1)[1]
    assert copy_id != form_id
    expect(page.locator("#heading-title")).to_have_text(f"{title} (copy)")
    expect(page.locator(".field-card")).to_have_count(12)
    status: Any = page.evaluate(PUT_FIELDS, [copy_id, {"showPatient": True}])
    assert status == 200
    page.reload()
    expect(page.locator(".score-summary")).to_contain_text("Shown to the patient")
    copy_url = public_url_of(page)

    patient_ctx = new_context(browser, watch, **PHONE)
    patient = patient_ctx.new_page()
    patient.goto(copy_url)
    answer_phq9(patient, [3] * 9)
    patient.get_by_role("button", name="Send").click()
    results = patient.locator("#confirmation-scores")
    expect(results).to_be_visible()
    expect(results.locator("dt")).to_have_text("PHQ-9 total")
    expect(results.locator("dd")).to_have_text("27 (Severe)")
    check_page(patient, "patient-phq9-results")
    # Nothing of it is kept: a reload shows the confirmation code, not the result.
    patient.reload()
    expect(patient.locator("#confirmation-scores")).to_be_hidden()
    patient_ctx.close()
    staff_ctx.close()
    assert watch.unexpected() == []
