"""Branding in Chromium: an admin sets the clinic's name, colour and logo (a colour white
text cannot be read on is refused, with the rule), writes a thank-you message in the
builder; a patient on a phone sees all of it and the message after sending; staff
download the PDF, named after form, date and code, with the logo in it."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import Browser, expect
from pypdf import PdfReader
from pypdf.generic import DictionaryObject

from tests.support.servers import ServerProcess
from tests.web.browser import Watch, check_page, new_context
from tests.web.conftest import require_api
from tests.web.seed import create_users, publish_form
from tests.web.test_public_pages import PHONE
from tests.web.test_staff_flow import DESKTOP, api_json, assert_renders, sign_in

pytestmark = pytest.mark.browser

FIELDS: list[dict[str, Any]] = [
    {"id": "full_name", "type": "text", "label": "Full name", "required": True},
    {"id": "reason", "type": "textarea", "label": "Reason for visit"},
]
ACCENT = "#5a2ca0"
ACCENT_RGB = "rgb(90, 44, 160)"
THANK_YOU = "We will call you within two working days.\nPlease bring your insurance card."


def logo_file(tmp_path: Path) -> Path:
    image = Image.new("RGB", (480, 120), (90, 44, 160))
    for x in range(40, 440):
        for y in range(50, 70):
            image.putpixel((x, y), (255, 255, 255))
    path = tmp_path / "sunrise-logo.png"
    image.save(path, format="PNG")
    return path


def image_sizes(pdf: bytes) -> list[tuple[int, int]]:
    sizes = []
    for page in PdfReader(io.BytesIO(pdf)).pages:
        found = page.get("/Resources")
        resources = found.get_object() if found is not None else None
        if not isinstance(resources, DictionaryObject) or "/XObject" not in resources:
            continue
        objects = resources["/XObject"].get_object()
        assert isinstance(objects, DictionaryObject)
        for name in objects:
            obj = objects[name].get_object()
            assert isinstance(obj, DictionaryObject)
            if str(obj["/Subtype"]) == "/Image":
                sizes.append((int(str(obj["/Width"])), int(str(obj["/Height"]))))
    return sizes


def test_a_branded_form_on_a_phone_from_admin_page_to_pdf(
    browser: Browser,
    server: ServerProcess,
    database_url: str,
    api_paths: set[str],
    tmp_path: Path,
) -> None:
    require_api(
        api_paths,
        "/api/organization/branding",
        "/api/organization/branding/logo",
        "/api/public/forms/{publicId}/responses",
        "/api/responses/{id}/generate-pdf",
    )
    base = server.base_url
    (admin,) = create_users(database_url, [("Ada Admin", "admin")])
    form_id, public_id = publish_form(
        database_url, admin.organization_id, "New patient intake", FIELDS
    )
    watch = Watch()

    # The admin's branding page: labelled, keyboard-operable, errors announced.
    staff = new_context(browser, watch, **DESKTOP)
    page = staff.new_page()
    sign_in(page, base, admin, "/admin/branding")
    expect(page.get_by_role("heading", name="Branding")).to_be_visible()
    check_page(page, "branding-admin")
    page.get_by_label("Name shown to patients").fill("Sunrise Family Clinic")
    page.get_by_label("Accent colour (hex code)").fill("#ffcc00")
    page.get_by_label("Accent colour (hex code)").press("Enter")  # submits, by keyboard
    error = page.locator("#accent-error")
    expect(error).to_be_visible()
    expect(error).to_have_attribute("role", "alert")
    expect(error).to_contain_text("4.5:1")
    expect(error).to_contain_text("WCAG AA")
    expect(page.get_by_label("Accent colour (hex code)")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Accent colour (hex code)")).to_be_focused()
    check_page(page, "branding-admin-refused")
    page.get_by_label("Accent colour (hex code)").fill(ACCENT)
    page.get_by_role("button", name="Save name and colour").click()
    expect(page.locator("#notice-info")).to_contain_text("Saved")
    expect(error).to_be_hidden()
    page.get_by_label("PNG or JPEG file").set_input_files(str(logo_file(tmp_path)))
    page.get_by_role("button", name="Upload logo").click()
    expect(page.locator("#notice-info")).to_contain_text("Logo saved")
    preview = page.get_by_role("img", name="Your current logo")
    expect(preview).to_be_visible()
    assert preview.evaluate("img => img.naturalWidth") == 480
    check_page(page, "branding-admin-saved")

    # The thank-you message, written in the builder and published.
    page.goto(f"{base}/forms/{form_id}")
    page.get_by_label("Thank-you message").fill(THANK_YOU)
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#save-state")).to_contain_text("saved")
    page.get_by_role("button", name="Publish changes").click()
    expect(page.locator("#publish-btn")).to_have_text("Published")

    # The patient, on a phone: the clinic's logo, name and colour; the message after.
    patient = new_context(browser, watch, **PHONE)
    form_page = patient.new_page()
    form_page.goto(f"{base}/f/{public_id}")
    header = form_page.locator("header.clinic-bar")
    expect(header).to_contain_text("Sunrise Family Clinic")
    logo = header.locator("img.clinic-logo")
    expect(logo).to_be_visible()
    assert logo.evaluate("img => img.complete && img.naturalWidth") == 480
    send = form_page.get_by_role("button", name="Send")
    expect(send).to_have_css("background-color", ACCENT_RGB)
    check_page(form_page, "branding-patient-390")
    form_page.get_by_label("Full name").fill("Pat Patient")
    send.click()
    confirmation = form_page.locator("#confirmation")
    expect(confirmation).to_be_visible()
    message = form_page.locator("#thank-you-message")
    expect(message).to_be_visible()
    expect(message).to_have_text(THANK_YOU)
    code = form_page.locator("#confirmation-code").inner_text().strip()
    assert code
    check_page(form_page, "branding-patient-confirmation-390")
    patient.close()

    # Staff: the PDF is named after form, date and code, and prints the logo.
    responses = api_json(staff, base, f"/api/forms/{form_id}/responses")["responses"]
    response_id = responses[0]["id"]
    page.goto(f"{base}/responses/{response_id}")
    page.get_by_role("button", name="Generate PDF").click()
    page.wait_for_url(f"{base}/responses/{response_id}?pdf=generated")
    with page.expect_download() as info:
        page.get_by_role("link", name="Download PDF").click()
    download = info.value
    assert re.fullmatch(
        rf"new-patient-intake_\d{{4}}-\d\d-\d\d_{code}\.pdf", download.suggested_filename
    )
    data = download.path().read_bytes()
    text = PdfReader(io.BytesIO(data)).pages[0].extract_text()
    assert "Sunrise Family Clinic" in text and code in text
    assert (480, 120) in image_sizes(data)
    assert_renders(data, "branded-intake")
    staff.close()
    assert watch.unexpected(422) == []  # the refused colour
