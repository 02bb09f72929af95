"""The whole journey in Chromium: an admin builds and publishes a form with one field of
each type, a patient on a phone fills it in and signs, a resend stores nothing new, staff
read the response and download its PDF, then sign out. Plus the edit lock seen by a second
user, CSRF recovery and idle log-off."""

from __future__ import annotations

import io
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from typing import Any, cast

import pytest
from PIL import Image
from playwright.sync_api import Browser, BrowserContext, Page, expect
from pypdf import PdfReader

from tests.support.servers import ServerProcess
from tests.web.browser import Watch, check_page, new_context
from tests.web.conftest import SCREENSHOTS, require_api
from tests.web.seed import (
    ALL_TYPES_FIELDS,
    SeededUser,
    create_response_row,
    create_users,
    publish_form,
)
from tests.web.test_public_pages import PHONE, draw_signature

pytestmark = pytest.mark.browser

PDFTOPPM = shutil.which("pdftoppm") or "/usr/bin/pdftoppm"
DESKTOP = {"viewport": {"width": 1280, "height": 900}, "accept_downloads": True}
IDENTITY = ("/api/auth/session-login", "/api/auth/csrf-token", "/api/auth/logout")
FORMS = ("/api/forms", "/api/forms/{id}", "/api/forms/{id}/publish", "/api/forms/{id}/lock")
PUBLIC = ("/api/public/forms/{publicId}", "/api/public/forms/{publicId}/responses")
RESPONSES = (
    "/api/forms/{id}/responses",
    "/api/responses/{id}",
    "/api/responses/{id}/generate-pdf",
)


@pytest.fixture(scope="module")
def staff(server: ServerProcess, database_url: str) -> dict[str, SeededUser]:
    admin, editor = create_users(database_url, [("Ada Admin", "admin"), ("Eddie Editor", "editor")])
    return {"admin": admin, "editor": editor}


@pytest.fixture
def watch() -> Iterator[Watch]:
    w = Watch()
    yield w


def sign_in(page: Page, base: str, user: SeededUser, next_path: str | None = None) -> None:
    page.goto(f"{base}/login" + (f"?next={next_path}" if next_path else ""))
    page.get_by_label("Email").fill(user.email)
    page.get_by_label("Password").fill(user.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}{next_path or '/forms'}")


def api_json(context: BrowserContext, base: str, path: str) -> Any:
    response = context.request.get(f"{base}{path}")
    assert response.ok, (path, response.status, response.text())
    return response.json()


def add_field(page: Page, spec: dict[str, Any]) -> None:
    page.get_by_label("Add a field").select_option(spec["type"])
    page.get_by_role("button", name="Add field").click()
    card = page.locator(".field-card").last
    expect(card.get_by_label("Question", exact=True)).to_be_focused()
    card.get_by_label("Question", exact=True).fill(spec["label"])
    card.get_by_label("Field key").fill(spec["id"])
    if spec.get("required"):
        card.get_by_label("Required").check()
    if spec.get("helpText"):
        card.get_by_label("Help text").fill(spec["helpText"])
    if spec.get("options"):
        card.get_by_label("Options").fill("\n".join(spec["options"]))
    if "min" in spec:
        card.get_by_label("Smallest allowed").fill(str(spec["min"]))
        card.get_by_label("Largest allowed").fill(str(spec["max"]))
    if spec.get("showWhen"):
        # Conditions are picked, not typed: the question, then one of its options.
        card.get_by_label("Show", exact=True).select_option("all")
        card.get_by_label("Answer to").select_option(spec["showWhen"]["field"])
        card.get_by_label("Condition", exact=True).select_option("equals")
        card.get_by_label("Value").select_option(str(spec["showWhen"]["equals"]))


def build_form(page: Page, base: str, title: str) -> str:
    page.get_by_role("link", name=re.compile("New form|Create your first form")).first.click()
    page.wait_for_url(f"{base}/forms/new")
    page.get_by_label("Title").fill(title)
    check_page(page, "form-new")
    page.get_by_role("button", name="Create and add fields").click()
    page.wait_for_url(re.compile(rf"{re.escape(base)}/forms/frm_[^/]+$"))
    form_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("#save-btn")).to_be_visible()
    expect(page.locator("#fields-empty")).to_be_visible()
    for spec in ALL_TYPES_FIELDS:
        add_field(page, spec)
    # Reorder and remove: a spare field moved to the top, checked in the preview, removed.
    page.get_by_label("Add a field").select_option("text")
    page.get_by_role("button", name="Add field").click()
    page.locator(".field-card").last.get_by_label("Question", exact=True).fill("Spare question")
    for _ in range(len(ALL_TYPES_FIELDS)):
        page.get_by_role("button", name="Move Spare question up").click()
    expect(page.locator(".field-card").first.get_by_label("Question", exact=True)).to_have_value(
        "Spare question"
    )
    expect(page.locator("#preview .q").first).to_contain_text("Spare question")
    page.get_by_role("button", name="Remove Spare question").click()
    expect(page.locator(".field-card")).to_have_count(len(ALL_TYPES_FIELDS))
    expect(page.locator("#preview .q")).to_have_count(len(ALL_TYPES_FIELDS))
    expect(page.locator("#preview")).not_to_contain_text("null")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#save-state")).to_contain_text("saved")
    return form_id


def fill_patient_form(page: Page) -> None:
    page.get_by_label("Full name").first.fill("Pat Patient")
    page.get_by_label("Medical history").fill("Appendix removed in 2009.")
    page.get_by_label("Email").fill("pat@example.com")
    page.get_by_label("Phone").fill("+1 555 0100")
    page.get_by_label("Age").fill("42")
    page.get_by_label("Date of birth").fill("1984-02-29")
    page.get_by_label("Reason for visit").select_option("Other")
    page.get_by_label("Please describe").fill("Persistent cough")
    page.get_by_label("No", exact=True).check()
    page.get_by_label("Latex").check()
    page.get_by_label("Nuts").check()
    page.get_by_label("I consent to treatment").check()
    draw_signature(page, "signature")


def test_admin_builds_publishes_patient_submits_staff_reads_pdf(
    browser: Browser,
    server: ServerProcess,
    api_paths: set[str],
    staff: dict[str, SeededUser],
    watch: Watch,
) -> None:
    require_api(api_paths, *IDENTITY, *FORMS, *PUBLIC, *RESPONSES)
    base = server.base_url
    title = f"Intake {secrets.token_hex(3)}"
    admin_ctx = new_context(browser, watch, **DESKTOP)
    page = admin_ctx.new_page()
    sign_in(page, base, staff["admin"])
    check_page(page, "forms-list-empty")

    form_id = build_form(page, base, title)
    saved = api_json(admin_ctx, base, f"/api/forms/{form_id}")
    assert [(f["id"], f["type"]) for f in saved["fields"]] == [
        (f["id"], f["type"]) for f in ALL_TYPES_FIELDS
    ]
    by_id = {f["id"]: f for f in saved["fields"]}
    assert by_id["other_reason"]["showWhen"] == {"field": "visit", "equals": "Other"}
    assert by_id["visit"]["options"] == ["Check-up", "Injury", "Other"]
    assert by_id["age"]["min"] == 0 and by_id["age"]["max"] == 130
    assert by_id["history"]["helpText"].startswith("Operations")
    assert by_id["consent"]["required"] is True and "options" not in by_id["consent"]

    page.get_by_role("button", name="Publish").click()
    link = page.get_by_label("Public link for patients")
    expect(link).to_have_value(re.compile(rf"^{re.escape(base)}/f/.+"))
    public_url = link.input_value()
    expect(page.locator("#status-badge")).to_have_text("Published v1")
    check_page(page, "builder")

    # The patient: a fresh context on a phone-sized screen.
    patient_ctx = new_context(browser, watch, **PHONE)
    patient = patient_ctx.new_page()
    patient.goto(public_url)
    fill_patient_form(patient)
    check_page(patient, "patient-form-filled")
    # A double click sends once: the button is disabled while the request is out.
    patient.get_by_role("button", name="Send").dblclick()
    confirmation = patient.locator("#confirmation-code")
    expect(confirmation).to_be_visible()
    code = confirmation.inner_text().strip()
    assert code
    check_page(patient, "patient-confirmation")

    # Back (the next patient on a shared tablet): "already sent" over an empty form, never
    # the answers (issue 15). Sending the same nonce again is tested at the API.
    patient.go_back()
    expect(patient.locator("#patient-form")).to_be_visible()
    expect(patient.locator("#already-code")).to_have_text(code)
    expect(patient.get_by_label("Full name").first).to_have_value("")
    responses = api_json(admin_ctx, base, f"/api/forms/{form_id}/responses")["responses"]
    assert len(responses) == 1
    response_id = responses[0]["id"]

    # Staff read it.
    page.goto(f"{base}/forms")
    row = page.locator(f'tr[data-form-id="{form_id}"]')
    expect(row.locator("td").nth(3)).to_have_text("1")
    check_page(page, "forms-list")
    row.get_by_role("link", name=re.compile("Responses")).click()
    page.wait_for_url(f"{base}/forms/{form_id}/responses")
    expect(page.locator("#responses-table tbody tr")).to_have_count(1)
    check_page(page, "responses-list")
    page.get_by_role("link", name="Open response").click()
    page.wait_for_url(f"{base}/responses/{response_id}")
    answers = page.locator("#answers")
    expect(answers).to_be_visible()
    expect(answers.locator('[data-field-id="full_name"] dd')).to_have_text("Pat Patient")
    expect(answers.locator('[data-field-id="allergies"] dd')).to_contain_text("Latex")
    expect(answers.locator('[data-field-id="consent"] dd')).to_have_text("Yes")
    expect(answers.locator('[data-field-id="signature"] img')).to_have_attribute(
        "alt", "Patient's signature"
    )
    check_page(page, "response")

    # The PDF: nothing is generated by looking; the button POSTs, then the page offers
    # the stored PDF as a download (a GET).
    expect(page.get_by_role("link", name="Download PDF")).to_have_count(0)
    page.get_by_role("button", name="Generate PDF").click()
    page.wait_for_url(f"{base}/responses/{response_id}?pdf=generated")
    expect(page.get_by_text("The PDF is ready")).to_be_visible()
    expect(page.get_by_role("button", name="Generate PDF")).to_have_count(0)
    check_page(page, "response-pdf-ready")
    with page.expect_download() as info:
        page.get_by_role("link", name="Download PDF").click()
    download = info.value
    assert download.suggested_filename.endswith(".pdf")
    assert "intake" in download.suggested_filename.lower()
    assert code in download.suggested_filename  # form, date and confirmation code
    path = download.path()
    data = path.read_bytes()
    assert data.startswith(b"%PDF")
    text = "".join(p.extract_text() or "" for p in PdfReader(io.BytesIO(data)).pages)
    assert "Full name" in text and "Pat Patient" in text
    assert_renders(data, "printed-intake")

    # Staff pages on a 320 px phone: readable without sideways scrolling.
    narrow = admin_ctx.new_page()
    narrow.set_viewport_size({"width": 320, "height": 640})
    for name, page_path in (
        ("narrow-builder", f"/forms/{form_id}"),
        ("narrow-responses", f"/forms/{form_id}/responses"),
        ("narrow-response", f"/responses/{response_id}"),
    ):
        narrow.goto(f"{base}{page_path}")
        narrow.wait_for_load_state("networkidle")
        check_page(narrow, name, full_page=False)
    narrow.close()

    page.get_by_role("button", name="Sign out", exact=True).click()
    page.wait_for_url(f"{base}/login")
    page.goto(f"{base}/forms")
    assert page.url == f"{base}/login?next=/forms"
    for ctx in (admin_ctx, patient_ctx):
        ctx.close()
    assert watch.unexpected() == []


def assert_renders(pdf: bytes, name: str) -> None:
    """Poppler draws every page of the PDF (not blank): what a printer would show."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    source = SCREENSHOTS / f"{name}.pdf"
    source.write_bytes(pdf)
    for old in SCREENSHOTS.glob(f"{name}-*.png"):
        old.unlink()
    subprocess.run(  # noqa: S603 - a fixed tool on a file this test wrote
        [PDFTOPPM, "-png", "-r", "60", str(source), str(SCREENSHOTS / name)],
        check=True,
        timeout=60,
    )
    pages = sorted(SCREENSHOTS.glob(f"{name}-*.png"))
    assert pages, "pdftoppm drew no page"
    for page_png in pages:
        with Image.open(page_png) as image:
            darkest, lightest = cast(tuple[int, int], image.convert("L").getextrema())
            assert darkest < 100 < lightest, f"{page_png.name} looks blank"


def clinic_with_responses(
    database_url: str, person: tuple[str, str], title: str, responses: int
) -> tuple[SeededUser, str, list[str]]:
    """A staff member (name, role), a published form of their clinic, and `responses`
    stored responses to it (newest last)."""
    (user,) = create_users(database_url, [person])
    form_id, _ = publish_form(database_url, user.organization_id, title, ALL_TYPES_FIELDS)
    return user, form_id, [create_response_row(database_url, form_id) for _ in range(responses)]


def test_a_response_without_a_pdf_offers_the_button_on_download(
    browser: Browser,
    server: ServerProcess,
    database_url: str,
    api_paths: set[str],
    watch: Watch,
) -> None:
    require_api(api_paths, *IDENTITY, *RESPONSES)
    viewer, form_id, (response_id,) = clinic_with_responses(
        database_url, ("Vera Viewer", "viewer"), "Intake PDF", 1
    )
    base = server.base_url
    ctx = new_context(browser, watch, **DESKTOP)
    page = ctx.new_page()
    sign_in(page, base, viewer, next_path=f"/responses/{response_id}/pdf")
    # A GET generates nothing: a page that says so, with the button.
    expect(page.get_by_role("heading", name="No PDF yet")).to_be_visible()
    check_page(page, "response-pdf-missing")
    page.get_by_role("button", name="Generate PDF").click()
    page.wait_for_url(f"{base}/responses/{response_id}?pdf=generated")
    with page.expect_download() as info:
        page.get_by_role("link", name="Download PDF").click()
    data = info.value.path().read_bytes()
    assert data.startswith(b"%PDF")
    assert_renders(data, "printed-viewer")
    ctx.close()
    assert watch.unexpected(404) == []


def test_without_javascript_the_generate_button_is_a_plain_form_post(
    browser: Browser,
    server: ServerProcess,
    database_url: str,
    api_paths: set[str],
    watch: Watch,
) -> None:
    """The browser posts a plain form from a no-referrer page as `Origin: null`; its
    `Sec-Fetch-Site: same-origin` lets it through (before, every such post was 403)."""
    require_api(api_paths, *IDENTITY, *RESPONSES)
    (viewer,) = create_users(database_url, [("Nadia Nojs", "viewer")])
    form_id, _ = publish_form(database_url, viewer.organization_id, "No-JS PDF", ALL_TYPES_FIELDS)
    response_id = create_response_row(database_url, form_id)
    base = server.base_url
    signing = new_context(browser, watch, **DESKTOP)
    sign_in(signing.new_page(), base, viewer)
    signed_in = signing.storage_state()
    signing.close()
    ctx = new_context(browser, watch, java_script_enabled=False, storage_state=signed_in, **DESKTOP)
    page = ctx.new_page()
    page.goto(f"{base}/responses/{response_id}/pdf")
    posted: list[dict[str, str]] = []
    page.on(
        "request",
        lambda request: posted.append(request.headers) if request.method == "POST" else None,
    )
    page.get_by_role("button", name="Generate PDF").click()
    page.wait_for_url(f"{base}/responses/{response_id}?pdf=generated")
    assert posted and posted[0].get("origin") == "null"
    expect(page.get_by_role("link", name="Download PDF")).to_be_visible()
    ctx.close()


def test_second_user_sees_the_builder_locked_until_the_first_leaves(
    browser: Browser,
    server: ServerProcess,
    api_paths: set[str],
    staff: dict[str, SeededUser],
    watch: Watch,
) -> None:
    require_api(api_paths, *IDENTITY, *FORMS)
    base = server.base_url
    first_ctx = new_context(browser, watch, **DESKTOP)
    first = first_ctx.new_page()
    sign_in(first, base, staff["admin"])
    first.goto(f"{base}/forms/new")
    first.get_by_label("Title").fill(f"Consent {secrets.token_hex(3)}")
    first.get_by_role("button", name="Create and add fields").click()
    first.wait_for_url(re.compile(r".*/forms/frm_[^/]+$"))
    form_path = first.url.removeprefix(base)
    expect(first.locator("#save-btn")).to_be_visible()

    second_ctx = new_context(browser, watch, **DESKTOP)
    second = second_ctx.new_page()
    sign_in(second, base, staff["editor"], next_path=form_path)
    banner = second.locator("#lock-banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Being edited by Ada Admin")
    expect(second.locator("#save-btn")).to_be_hidden()
    expect(second.get_by_label("Title")).to_be_disabled()
    check_page(second, "builder-locked")

    # The holder leaves: the keepalive DELETE releases the lock, the other may edit.
    first.goto(f"{base}/forms")
    for _ in range(20):
        second.reload()
        second.wait_for_function(
            "() => !document.getElementById('save-btn').hidden"
            " || !document.getElementById('lock-banner').hidden"
        )
        if second.locator("#save-btn").is_visible():
            break
        second.wait_for_timeout(250)
    expect(second.locator("#save-btn")).to_be_visible()
    expect(second.locator("#lock-banner")).to_be_hidden()
    expect(second.get_by_label("Title")).to_be_enabled()
    first_ctx.close()
    second_ctx.close()
    assert watch.unexpected(409) == []


def test_csrf_failure_is_retried_once_and_otherwise_surfaced(
    browser: Browser,
    server: ServerProcess,
    api_paths: set[str],
    staff: dict[str, SeededUser],
    watch: Watch,
) -> None:
    require_api(api_paths, *IDENTITY, *FORMS)
    base = server.base_url
    ctx = new_context(browser, watch, **DESKTOP)
    page = ctx.new_page()
    sign_in(page, base, staff["admin"])
    page.goto(f"{base}/forms/new")
    page.get_by_label("Title").fill(f"History {secrets.token_hex(3)}")
    page.get_by_role("button", name="Create and add fields").click()
    page.wait_for_url(re.compile(r".*/forms/frm_[^/]+$"))
    expect(page.locator("#save-btn")).to_be_visible()
    statuses: list[tuple[str, int]] = []
    page.on(
        "response",
        lambda r: statuses.append((r.request.method, r.status)) if "/api/" in r.url else None,
    )

    # 1. The cached token is replaced by a bad one: one 403, a refetch, the retry passes.
    page.evaluate("document.querySelector('meta[name=csrf-token]').content = 'bogus.token'")
    page.get_by_label("Title").fill("History (renamed)")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#save-state")).to_contain_text("saved")
    assert [status for method, status in statuses if method == "PUT"] == [403, 200]

    # 2. The refetch cannot help either: the failure is shown, the edit is kept.
    def bad_token(route: Any) -> None:
        route.fulfill(status=200, json={"csrfToken": "still.bogus"})

    page.route("**/api/auth/csrf-token", bad_token)
    page.evaluate("document.querySelector('meta[name=csrf-token]').content = 'bogus.token'")
    page.get_by_label("Title").fill("History (second rename)")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#notice-error")).to_contain_text("security token")
    expect(page.locator("#save-state")).to_have_text("Unsaved changes")
    expect(page.get_by_label("Title")).to_have_value("History (second rename)")
    check_page(page, "builder-csrf-error")
    page.unroute("**/api/auth/csrf-token")
    page.evaluate("document.querySelector('meta[name=csrf-token]').content = ''")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#save-state")).to_contain_text("saved")
    form_id = page.url.rsplit("/", 1)[1]
    assert api_json(ctx, base, f"/api/forms/{form_id}")["title"] == "History (second rename)"
    ctx.close()
    assert watch.unexpected(403) == []


def test_expired_session_returns_the_page_to_sign_in(
    browser: Browser,
    server: ServerProcess,
    api_paths: set[str],
    staff: dict[str, SeededUser],
    watch: Watch,
) -> None:
    require_api(api_paths, *IDENTITY, *FORMS)
    base = server.base_url
    ctx = new_context(browser, watch, **DESKTOP)
    page = ctx.new_page()
    sign_in(page, base, staff["editor"])
    page.goto(f"{base}/forms/new")
    # The session ends behind the page's back (another tab signed out, or it idled out).
    token = page.evaluate(
        "fetch('/api/auth/csrf-token').then((r) => r.json()).then((b) => b.csrfToken)"
    )
    page.evaluate(
        "(t) => fetch('/api/auth/logout', {method: 'POST', headers: {'X-CSRF-Token': t}})",
        token,
    )
    page.get_by_label("Title").fill("Never saved")
    page.get_by_role("button", name="Create and add fields").click()
    page.wait_for_url(f"{base}/login?next=%2Fforms%2Fnew")
    check_page(page)
    ctx.close()
    assert watch.unexpected(401) == []


def test_account_and_user_pages(
    browser: Browser,
    server: ServerProcess,
    api_paths: set[str],
    staff: dict[str, SeededUser],
    watch: Watch,
) -> None:
    require_api(api_paths, *IDENTITY, "/api/auth/sessions", "/api/users")
    base = server.base_url
    other_ctx = new_context(browser, watch, **DESKTOP)
    sign_in(other_ctx.new_page(), base, staff["admin"])
    ctx = new_context(browser, watch, **DESKTOP)
    page = ctx.new_page()
    sign_in(page, base, staff["admin"], next_path="/account")
    sessions = page.locator("#sessions li")
    expect(sessions.first).to_be_visible()
    before = sessions.count()
    assert before >= 2
    expect(page.locator("#sessions li .badge")).to_have_text(["This browser"])
    check_page(page, "account")
    # Revoke another session; this one stays.
    page.get_by_role("button", name=re.compile("^Sign out the session")).first.click()
    expect(sessions).to_have_count(before - 1)
    expect(page.get_by_text("Session signed out.")).to_be_visible()

    page.get_by_role("link", name="Users").click()
    page.wait_for_url(f"{base}/admin/users")
    expect(page.locator("#users-table tbody tr").first).to_be_visible()
    email = f"nurse-{secrets.token_hex(3)}@clinic.example"
    page.get_by_label("Name").fill("Nina Nurse")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Initial password").fill(f"Pw-{secrets.token_hex(8)}")
    page.get_by_label("Role", exact=True).select_option("viewer")
    page.get_by_role("button", name="Add user").click()
    row = page.locator("#users-table tbody tr").filter(has_text=email)
    expect(row).to_have_count(1)
    row.get_by_role("button", name="Disable Nina Nurse").click()
    expect(row.locator(".badge")).to_have_text("Disabled")
    check_page(page, "admin-users")
    page.reload()
    expect(
        page.locator("#users-table tbody tr").filter(has_text=email).locator(".badge")
    ).to_have_text("Disabled")

    narrow = ctx.new_page()
    narrow.set_viewport_size({"width": 320, "height": 640})
    for path in ("/forms", "/account", "/admin/users"):
        narrow.goto(f"{base}{path}")
        narrow.wait_for_load_state("networkidle")
        check_page(narrow, f"narrow{path.replace('/', '-')}")
    ctx.close()
    other_ctx.close()
    assert watch.unexpected() == []


def test_audit_page_lists_and_filters_events(
    browser: Browser,
    server: ServerProcess,
    api_paths: set[str],
    staff: dict[str, SeededUser],
    watch: Watch,
) -> None:
    require_api(api_paths, *IDENTITY, "/api/audit")
    base = server.base_url
    ctx = new_context(browser, watch, **DESKTOP)
    page = ctx.new_page()
    sign_in(page, base, staff["admin"], next_path="/admin/audit")
    expect(page.locator("#audit-table tbody tr").first).to_be_visible()
    page.get_by_label("Action").fill("auth.login")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#audit-table tbody tr").first).to_contain_text("auth.login")
    check_page(page, "admin-audit")
    page.set_viewport_size({"width": 320, "height": 640})
    check_page(page, "narrow-admin-audit")
    ctx.close()
    assert watch.unexpected() == []


def test_totp_enrolment_then_sign_in_asks_for_the_code(
    browser: Browser,
    server: ServerProcess,
    api_paths: set[str],
    database_url: str,
    watch: Watch,
) -> None:
    require_api(api_paths, *IDENTITY, "/api/auth/totp/enrol", "/api/auth/totp/confirm")
    import time

    import pyotp

    (user,) = create_users(database_url, [("Tess Totp", "editor")])
    base = server.base_url
    ctx = new_context(browser, watch, **DESKTOP)
    page = ctx.new_page()
    sign_in(page, base, user, next_path="/account")
    # Enrolment needs the current password; the QR code is drawn by the service.
    page.locator("#totp-password").fill(user.password)
    page.get_by_role("button", name="Set up an authenticator app").click()
    expect(page.get_by_label("Setup key")).not_to_have_value("")
    secret = page.get_by_label("Setup key").input_value()
    assert page.get_by_label("Setup link").input_value().startswith("otpauth://")
    qr = page.get_by_role("img", name=re.compile("QR code"))
    expect(qr).to_be_visible()
    assert (qr.get_attribute("src") or "").startswith("data:image/svg+xml")
    assert page.evaluate("document.getElementById('totp-qr').naturalWidth") > 0
    check_page(page, "account-totp-setup")
    page.get_by_label("Code from the app").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Turn on").click()
    codes = page.locator("#recovery-codes-list li")
    expect(codes).to_have_count(10)
    recovery = codes.first.inner_text().strip()
    check_page(page, "account-recovery-codes")
    page.get_by_role("button", name="I have saved them").click()
    expect(page.get_by_text("Signing in asks for a code")).to_be_visible()
    expect(page.locator("#recovery-left")).to_contain_text("10")
    page.get_by_role("button", name="Sign out", exact=True).click()
    page.wait_for_url(f"{base}/login")

    # No code field until the password was right.
    expect(page.get_by_label("Authenticator code")).to_be_hidden()
    page.get_by_label("Email").fill(user.email)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#login-error")).to_contain_text("incorrect")
    expect(page.get_by_label("Authenticator code")).to_be_hidden()
    page.get_by_label("Password").fill(user.password)
    page.get_by_role("button", name="Sign in").click()
    code_field = page.get_by_label("Authenticator code")
    expect(code_field).to_be_visible()
    expect(page.locator("#login-error")).to_contain_text("authenticator app")
    check_page(page, "login-totp")
    # A recovery code works once in the same field.
    code_field.fill(recovery)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/forms")
    page.goto(f"{base}/account")
    expect(page.locator("#recovery-left")).to_contain_text("9")
    page.get_by_role("button", name="Sign out", exact=True).click()
    page.wait_for_url(f"{base}/login")
    page.get_by_label("Email").fill(user.email)
    page.get_by_label("Password").fill(user.password)
    page.get_by_role("button", name="Sign in").click()
    expect(code_field).to_be_visible()
    code_field.fill(pyotp.TOTP(secret).at(time.time() + 30))
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/forms")
    ctx.close()
    assert watch.unexpected(401) == []


def test_admin_resets_a_password_and_the_user_changes_it_on_the_account_page(
    browser: Browser,
    server: ServerProcess,
    api_paths: set[str],
    database_url: str,
    watch: Watch,
) -> None:
    require_api(api_paths, *IDENTITY, "/api/users/{id}/reset-password", "/api/auth/password")
    admin, member = create_users(database_url, [("Ray Admin", "admin"), ("Rita Reset", "viewer")])
    base = server.base_url
    admin_ctx = new_context(browser, watch, **DESKTOP)
    page = admin_ctx.new_page()
    sign_in(page, base, admin, next_path="/admin/users")
    own = page.locator(f'tr[data-user-id="{admin.id}"]')
    expect(own.get_by_role("button")).to_have_count(0)  # one's own: the account page
    page.get_by_role("button", name="Reset the password of Rita Reset").click()
    expect(page.get_by_label("New password (optional)")).to_be_focused()
    check_page(page, "admin-users-reset")
    page.get_by_role("button", name="Reset password", exact=True).click()
    shown = page.get_by_label("New password, shown only now")
    expect(shown).not_to_have_value("")
    generated = shown.input_value()
    page.get_by_role("button", name="Done").click()
    expect(shown).to_be_hidden()
    admin_ctx.close()

    ctx = new_context(browser, watch, **DESKTOP)
    page = ctx.new_page()
    page.goto(f"{base}/login")
    page.get_by_label("Email").fill(member.email)
    page.get_by_label("Password").fill(member.password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#login-error")).to_contain_text("incorrect")
    page.get_by_label("Password").fill(generated)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/forms")
    page.goto(f"{base}/account")
    new_password = f"mine-{secrets.token_hex(6)}"
    page.get_by_label("Current password", exact=True).first.fill(generated)
    page.get_by_label("New password", exact=True).fill(new_password)
    page.get_by_label("New password again").fill(new_password)
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_text("Your password was changed")).to_be_visible()
    check_page(page, "account-password-changed")
    # Still signed in here (a fresh session), and the new password signs in elsewhere.
    page.reload()
    expect(page.get_by_role("heading", name="My account")).to_be_visible()
    other = new_context(browser, watch, **DESKTOP)
    sign_in(other.new_page(), base, replace(member, password=new_password))
    other.close()
    ctx.close()
    assert watch.unexpected(401) == []


REVIEW = ("/api/responses/{id}/status", "/api/responses/{id}/notes")


def test_staff_mark_reviewed_from_the_list_then_add_a_note_and_file_it(
    browser: Browser,
    server: ServerProcess,
    database_url: str,
    api_paths: set[str],
    watch: Watch,
) -> None:
    require_api(api_paths, *IDENTITY, *RESPONSES, *REVIEW)
    editor, form_id, (first, second) = clinic_with_responses(
        database_url, ("Rita Reviewer", "editor"), "Intake review", 2
    )
    base = server.base_url
    ctx = new_context(browser, watch, **DESKTOP)
    page = ctx.new_page()
    sign_in(page, base, editor, next_path=f"/forms/{form_id}/responses")
    rows = page.locator("#responses-table tbody tr")
    expect(rows).to_have_count(2)
    expect(page.locator(f'tr[data-response-id="{first}"] .badge')).to_have_text("New")
    check_page(page, "responses-review")

    # From the list: one click, and the row says who reviewed it.
    page.locator(f'tr[data-response-id="{first}"]').get_by_role(
        "button", name="Mark reviewed"
    ).click()
    reviewed_row = page.locator(f'tr[data-response-id="{first}"]')
    expect(reviewed_row.locator(".badge")).to_have_text("Reviewed")
    expect(reviewed_row).to_contain_text("by Rita Reviewer")
    expect(reviewed_row.get_by_role("button", name="Mark reviewed")).to_have_count(0)
    page.select_option("#status-filter", "new")
    expect(rows).to_have_count(1)
    expect(page.locator(f'tr[data-response-id="{second}"]')).to_be_visible()

    # On the response page: a note, then filed.
    page.goto(f"{base}/responses/{first}")
    expect(page.locator("#review-status .badge")).to_have_text("Reviewed")
    expect(page.locator("#review-status")).to_contain_text("Reviewed by Rita Reviewer")
    expect(page.locator("#notes")).to_contain_text("No notes yet.")
    page.get_by_label(re.compile("Add a note")).fill("Called the patient back about the allergy.")
    page.get_by_role("button", name="Add note").click()
    expect(page.locator("#notes li")).to_have_count(1)
    expect(page.locator("#notes")).to_contain_text("Called the patient back")
    expect(page.get_by_label(re.compile("Add a note"))).to_have_value("")
    page.get_by_role("button", name="File", exact=True).click()
    expect(page.locator("#review-status .badge")).to_have_text("Filed")
    expect(page.locator("#review-status")).to_contain_text("Filed by Rita Reviewer")
    expect(page.get_by_role("button", name="Take out of filed")).to_be_visible()
    check_page(page, "response-review")
    listed = api_json(ctx, base, f"/api/forms/{form_id}/responses?status=filed")["responses"]
    assert [r["id"] for r in listed] == [first]

    # A patient on the phone reads out their code: the forms page finds the response.
    code = api_json(ctx, base, f"/api/responses/{second}")["confirmation"]
    page.goto(f"{base}/forms")
    page.get_by_label("Find a response by confirmation code").fill(f"{code[:5].lower()} {code[5:]}")
    page.get_by_role("button", name="Find", exact=True).click()
    page.wait_for_url(f"{base}/responses/{second}")
    expect(page.locator("#review-status .badge")).to_have_text("New")
    page.goto(f"{base}/forms")
    page.get_by_label("Find a response by confirmation code").fill("NOSUCHCODE42")
    page.get_by_role("button", name="Find", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text("No response of your clinic")
    check_page(page, "forms-find-missing")
    ctx.close()
    assert watch.unexpected() == []


def test_a_long_responses_list_shows_fifty_then_older_ones_on_request(
    browser: Browser,
    server: ServerProcess,
    database_url: str,
    api_paths: set[str],
    watch: Watch,
) -> None:
    require_api(api_paths, *IDENTITY, *RESPONSES)
    viewer, form_id, ids = clinic_with_responses(
        database_url, ("Lena Lister", "viewer"), "Busy intake", 53
    )
    ctx = new_context(browser, watch, **DESKTOP)
    page = ctx.new_page()
    sign_in(page, server.base_url, viewer, next_path=f"/forms/{form_id}/responses")
    rows = page.locator("#responses-table tbody tr")
    expect(rows).to_have_count(50)
    # A viewer reads: no review buttons.
    expect(page.get_by_role("button", name="Mark reviewed")).to_have_count(0)
    page.get_by_role("button", name="Show older responses").click()
    expect(rows).to_have_count(53)
    expect(page.get_by_role("button", name="Show older responses")).to_be_hidden()
    shown = rows.evaluate_all("rows => rows.map(r => r.dataset.responseId)")
    assert sorted(shown) == sorted(ids) and len(set(shown)) == 53
    ctx.close()
    assert watch.unexpected() == []
