"""A patient on a phone adds a photo and a PDF, staff see them and print them (Chromium)."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import cast

import pytest
from playwright.sync_api import Browser, FilePayload, Page, expect
from pypdf import PdfReader
from pypdf.generic import DictionaryObject

from tests.support.servers import ServerProcess
from tests.uploads.helpers import pdf_document, photo_with_gps
from tests.web.browser import Watch, check_page, new_context
from tests.web.conftest import require_api
from tests.web.seed import create_users, publish_form
from tests.web.test_public_pages import PHONE
from tests.web.test_staff_flow import add_field, api_json, sign_in

pytestmark = pytest.mark.browser

UPLOADS = ("/api/public/forms/{publicId}/files", "/api/responses/{id}/files/{fileId}")
FIELDS = [
    {"id": "name", "type": "text", "label": "Full name", "required": True},
    {
        "id": "card",
        "type": "file",
        "label": "Insurance card",
        "required": True,
        "accept": ["image"],
        "helpText": "A photo of the front of your card.",
    },
    {"id": "referral", "type": "file", "label": "Referral letter", "maxFiles": 2},
]


@pytest.fixture
def watch() -> Iterator[Watch]:
    yield Watch()


def images_drawn(data: bytes) -> int:
    """How many image XObjects the PDF's pages draw."""
    count = 0
    for page in PdfReader(io.BytesIO(data)).pages:
        resources = cast(DictionaryObject, page["/Resources"].get_object())
        if "/XObject" not in resources:
            continue
        xobjects = cast(DictionaryObject, resources["/XObject"].get_object())
        count += sum(
            str(cast(DictionaryObject, obj.get_object())["/Subtype"]) == "/Image"
            for obj in xobjects.values()
        )
    return count


def choose(page: Page, field_id: str, name: str, mime: str, data: bytes) -> None:
    payload: FilePayload = {"name": name, "mimeType": mime, "buffer": data}
    page.locator(f"#q-{field_id}").set_input_files(files=[payload])


def test_a_phone_uploads_a_photo_staff_see_it_and_it_is_in_the_pdf(
    browser: Browser,
    server: ServerProcess,
    database_url: str,
    api_paths: set[str],
    watch: Watch,
) -> None:
    require_api(api_paths, *UPLOADS)
    (admin,) = create_users(database_url, [("Ada Admin", "admin")])
    form_id, public_id = publish_form(database_url, admin.organization_id, "Card intake", FIELDS)
    base = server.base_url

    patient_ctx = new_context(browser, watch, **PHONE)
    patient = patient_ctx.new_page()
    patient.goto(f"{base}/f/{public_id}")
    card = patient.locator("#q-card")
    expect(card).to_have_attribute("accept", "image/*")  # phones offer the camera
    expect(patient.locator("#q-card-limits")).to_have_text("Photos, one file, at most 10 MB.")
    check_page(patient, "upload-empty")

    # A PDF dressed as a photo: refused next to the field, in the server's words.
    choose(patient, "card", "card.jpg", "image/jpeg", pdf_document())
    expect(patient.locator("#q-card-error")).to_have_text("Must be a photo (JPEG, PNG or WebP)")
    expect(card).to_have_attribute("aria-invalid", "true")
    expect(patient.locator("#q-card-status")).to_have_text("card.jpg was not uploaded.")

    choose(patient, "card", "insurance-card.jpg", "image/jpeg", photo_with_gps((640, 400)))
    expect(patient.locator("#q-card-status")).to_have_text("insurance-card.jpg uploaded.")
    expect(patient.locator("#q-card-error")).to_be_hidden()
    expect(patient.locator("#q-card-list li")).to_have_count(1)
    expect(patient.locator("#q-card-list")).to_contain_text("insurance-card.jpg (photo")

    # A referral added, then removed with the keyboard: focus goes back to the control.
    choose(patient, "referral", "letter.pdf", "application/pdf", pdf_document(pages=2))
    expect(patient.locator("#q-referral-status")).to_have_text("letter.pdf uploaded.")
    remove = patient.get_by_role("button", name="Remove letter.pdf")
    remove.focus()
    patient.keyboard.press("Enter")
    expect(patient.locator("#q-referral-list li")).to_have_count(0)
    expect(patient.locator("#q-referral")).to_be_focused()
    expect(patient.locator("#q-referral-status")).to_have_text("Removed letter.pdf.")
    choose(patient, "referral", "letter.pdf", "application/pdf", pdf_document(pages=2))
    expect(patient.locator("#q-referral-status")).to_have_text("letter.pdf uploaded.")
    check_page(patient, "upload-chosen")

    patient.get_by_label("Full name").fill("Pat Patient")
    patient.get_by_role("button", name="Send").click()
    expect(patient.locator("#confirmation-code")).to_be_visible()

    # Staff: the photo is shown, the PDF offered as a download, both through audited reads.
    admin_ctx = new_context(browser, watch)
    page = admin_ctx.new_page()
    sign_in(page, base, admin)
    listed = admin_ctx.request.get(f"{base}/api/forms/{form_id}/responses")
    (response,) = listed.json()["responses"]
    page.goto(f"{base}/responses/{response['id']}")
    photo = page.locator('[data-field-id="card"] img.file-photo')
    expect(photo).to_be_visible()
    expect(photo).to_have_attribute("alt", "Insurance card: photo 1 of 1 (opens full size)")
    for _ in range(50):  # decoded, not a broken image (wait_for_function needs eval: CSP)
        if photo.evaluate("(img) => img.complete && img.naturalWidth") == 640:
            break
        page.wait_for_timeout(100)
    assert photo.evaluate("(img) => img.naturalWidth") == 640
    pdf_link = page.get_by_role(
        "link", name="Referral letter: PDF document 1 of 1, 2 pages (download)"
    )
    expect(pdf_link).to_be_visible()
    check_page(page, "upload-response")

    page.get_by_role("button", name="Generate PDF").click()
    page.wait_for_url(f"{base}/responses/{response['id']}?pdf=generated")
    with page.expect_download() as info:
        page.get_by_role("link", name="Download PDF", exact=True).click()
    printed = info.value.path().read_bytes()
    assert images_drawn(printed) >= 1
    reader = PdfReader(io.BytesIO(printed))
    text = "".join(p.extract_text() or "" for p in reader.pages)
    assert "Insurance card" in text and "PDF document, 2 pages" in text
    for ctx in (admin_ctx, patient_ctx):
        ctx.close()
    assert watch.unexpected(422) == []


def test_the_builder_adds_a_file_field_with_its_limits(
    browser: Browser,
    server: ServerProcess,
    database_url: str,
    api_paths: set[str],
    watch: Watch,
) -> None:
    require_api(api_paths, *UPLOADS)
    (admin,) = create_users(database_url, [("Ada Admin", "admin")])
    base = server.base_url
    context = new_context(browser, watch, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    sign_in(page, base, admin)
    page.get_by_role("link", name=re.compile("New form|Create your first form")).first.click()
    page.get_by_label("Title").fill("Photos please")
    page.get_by_role("button", name="Create and add fields").click()
    page.wait_for_url(re.compile(rf"{re.escape(base)}/forms/frm_[^/]+$"))
    form_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("#save-btn")).to_be_visible()  # the edit lock is held
    add_field(page, {"id": "card", "type": "file", "label": "Insurance card"})
    card = page.locator(".field-card").last
    card.get_by_label("Accepts").select_option("image")
    card.get_by_label("Most files, 1 to 10").fill("3")
    card.get_by_label("Largest file (MB), 1 to 20").fill("5")
    expect(page.locator("#preview")).to_contain_text("Photos, up to 3 files, at most 5 MB each.")
    expect(page.locator("#preview input[type=file]")).to_have_attribute("accept", "image/*")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#save-state")).to_contain_text("saved")
    check_page(page, "builder-file-field")
    saved = api_json(context, base, f"/api/forms/{form_id}")
    (field,) = saved["fields"]
    assert {k: field.get(k) for k in ("type", "accept", "maxFiles", "maxSizeMb")} == {
        "type": "file",
        "accept": ["image"],
        "maxFiles": 3,
        "maxSizeMb": 5,
    }
    context.close()
    assert watch.unexpected() == []
