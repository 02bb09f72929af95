"""The clinic's day in Chromium (issue 14): staff turn on alerts for a form, create a
request in the page and see its QR code (and what a printout holds); the patient opens
the link on a phone with their name already filled in and sends it; staff get the alert
(the count in the menu, and an email without PHI), see the patient's name in the
responses list, find them by name, mark the response reviewed and export the list as
CSV, whose row matches what the API says."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

import pytest
from playwright.sync_api import Browser, expect

from tests.support.servers import ServerProcess
from tests.support.smtp import SmtpServer
from tests.web.browser import Watch, check_page, new_context
from tests.web.seed import create_users, publish_form
from tests.web.test_public_pages import PHONE
from tests.web.test_staff_flow import DESKTOP, sign_in

pytestmark = pytest.mark.browser

PATIENT = "Rosalind Okonkwo-Baptiste"
FIELDS: list[dict[str, Any]] = [
    {
        "id": "full_name",
        "type": "text",
        "label": "Full name",
        "required": True,
        "identifies": "name",
    },
    {"id": "dob", "type": "date", "label": "Date of birth", "identifies": "birthDate"},
    {"id": "reason", "type": "textarea", "label": "Reason for visit", "required": True},
    {"id": "consent", "type": "checkbox", "label": "I consent to treatment", "required": True},
]


def test_staff_request_a_form_the_patient_sends_it_from_a_phone_and_staff_see_the_name(
    browser: Browser, server: ServerProcess, database_url: str, mailbox: SmtpServer
) -> None:
    base = server.base_url
    (admin,) = create_users(database_url, [("Ada Admin", "admin")])
    form_id, _ = publish_form(database_url, admin.organization_id, "Before your visit", FIELDS)
    watch = Watch()

    staff = new_context(browser, watch, **DESKTOP)
    page = staff.new_page()
    # Alerts for this form: the switch on its responses page.
    sign_in(page, base, admin, f"/forms/{form_id}/responses")
    toggle = page.get_by_label("Alert me about new responses")
    expect(toggle).to_be_enabled()
    expect(toggle).not_to_be_checked()
    toggle.check()
    expect(page.locator(".notice, [role=status]").filter(has_text="alerted")).to_be_visible()
    expect(page.locator("#alerts-link")).to_have_attribute("data-unread", "0")
    mails_before = len(mailbox.received)
    page.goto(f"{base}/forms/{form_id}/requests")
    expect(page.locator("#requests-empty")).to_be_visible()
    check_page(page, "requests-empty")
    page.get_by_label("Patient name").fill(PATIENT)
    page.get_by_label("Email (optional)").fill("rosalind@example.org")
    page.get_by_label("Expires after (days)").fill("3")
    page.get_by_role("button", name="Create request").click()

    issued = page.locator("#issued")
    expect(issued).to_be_visible()
    expect(page.locator("#issued-name")).to_have_text(PATIENT)
    qr = page.locator("#issued-qr")
    expect(qr).to_have_attribute("src", re.compile(r"^data:image/svg\+xml"))
    page.wait_for_function("document.getElementById('issued-qr').naturalWidth > 0")
    link = page.locator("#issued-link").input_value()
    assert re.fullmatch(rf"{re.escape(base)}/r/[A-Za-z0-9_-]{{43}}", link), link
    row = page.locator("#requests-table tbody tr")
    expect(row).to_have_count(1)
    expect(row.locator(".request-state")).to_have_text("Created")
    check_page(page, "requests-issued")

    # A printout holds the form's title, the QR code and the link, nothing else.
    page.emulate_media(media="print")
    expect(page.locator(".topbar")).to_be_hidden()
    expect(page.locator("#new-request")).to_be_hidden()
    expect(page.locator("#requests-section")).to_be_hidden()
    expect(page.get_by_role("button", name="Print")).to_be_hidden()
    expect(qr).to_be_visible()
    expect(page.locator(".print-title")).to_have_text("Before your visit")
    expect(page.locator("#issued-link-text")).to_have_text(link)
    page.emulate_media(media="screen")

    page.get_by_role("button", name="Mark as handed over").click()
    expect(row.locator(".request-state")).to_have_text("Handed over")

    phone = new_context(browser, watch, **PHONE)
    patient = phone.new_page()
    patient.goto(link)
    expect(patient).to_have_title(re.compile(r"^Your form from Clinic "))
    expect(patient.get_by_label("Full name")).to_have_value(PATIENT)
    check_page(patient, "request-phone")
    patient.get_by_label("Date of birth").fill("1985-09-17")
    patient.get_by_label("Reason for visit").fill("Annual check-up")
    patient.get_by_label("I consent to treatment").check()
    patient.get_by_role("button", name="Send").click()
    expect(patient.locator("#confirmation")).to_be_visible()
    code = patient.locator("#confirmation-code").inner_text().strip()
    assert re.fullmatch(r"[A-Z0-9]{10}", code), code

    # The link worked once: opened again, it says so and shows no form.
    again = phone.new_page()
    again.goto(link)
    expect(again.get_by_role("heading", name="This link cannot be used")).to_be_visible()
    expect(again.locator("#patient-form")).to_have_count(0)
    check_page(again)

    page.goto(f"{base}/forms/{form_id}/requests")
    expect(row.locator(".request-state")).to_have_text("Completed")
    expect(row.get_by_role("link", name="Open response")).to_be_visible()
    check_page(page, "requests-completed")

    # The alert: a count in the menu (the outbox worker of the server delivers it) ...
    alerts = page.locator("#alerts-link")
    for _ in range(60):
        page.reload()
        if alerts.get_attribute("data-unread") == "1":
            break
        page.wait_for_timeout(500)
    expect(alerts.locator(".count-badge")).to_have_text("1")
    alerts.click()
    page.wait_for_url(f"{base}/alerts")
    expect(page.locator(".alert-item")).to_contain_text("A new response to Before your visit")
    check_page(page, "alerts")
    page.reload()
    expect(page.locator("#alerts-link")).to_have_attribute("data-unread", "0")
    # ... and an email that names the form and links to it, nothing about the patient.
    (email,) = [
        m
        for m in mailbox.wait_for(mails_before + 1)[mails_before:]
        if m.recipients == [admin.email]
    ]
    assert f"/forms/{form_id}/responses" in email.text
    for secret in (PATIENT, "Okonkwo", "Annual check-up", "1985-09-17", code):
        assert secret not in email.text

    # The list shows whose response it is; a search by name finds it; mark it reviewed.
    page.goto(f"{base}/forms/{form_id}/responses")
    expect(page.locator(".patient-name")).to_have_text([PATIENT])
    expect(page.locator(".patient-dob")).to_contain_text("1985-09-17")
    page.get_by_label("Patient name").fill("okonkwo")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator("#responses-table tbody tr")).to_have_count(1)
    check_page(page, "responses-patient-search")
    page.get_by_role("button", name="Mark reviewed").click()
    expect(page.locator("#responses-table tbody tr").first).to_have_attribute(
        "data-status", "reviewed"
    )
    # On a phone the table turns into cards, the name first.
    narrow = staff.new_page()
    narrow.set_viewport_size({"width": 390, "height": 844})
    narrow.goto(f"{base}/forms/{form_id}/responses")
    expect(narrow.locator(".patient-name")).to_have_text([PATIENT])
    check_page(narrow, "responses-phone", full_page=False)
    narrow.close()

    # Export CSV: a real file, the same response as the API says.
    with page.expect_download() as info:
        page.get_by_role("link", name="Export CSV").click()
    download = info.value
    assert download.suggested_filename.endswith(".csv")
    rows = list(csv.DictReader(io.StringIO(download.path().read_text(encoding="utf-8-sig"))))
    api = staff.request.get(f"{base}/api/forms/{form_id}/responses").json()["responses"]
    assert (
        [(r["Response ID"], r["Confirmation"], r["Status"]) for r in rows]
        == [(a["id"], a["confirmation"], a["status"]) for a in api]
        == [(api[0]["id"], code, "reviewed")]
    )
    assert next(v for k, v in rows[0].items() if k.endswith("(full_name)")) == PATIENT
    phone.close()
    staff.close()
    assert watch.unexpected(410) == []
