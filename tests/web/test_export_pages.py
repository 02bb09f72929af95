"""Exports on a form's responses page in Chromium (docs/exports.md): an editor downloads
the list as CSV and Excel, with the status filter carried over, and the ticked responses'
PDFs as one ZIP; a viewer is offered none of it."""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator

import openpyxl
import pytest
from playwright.sync_api import Browser, Page, expect
from pypdf import PdfReader

from tests.support.servers import ServerProcess
from tests.web.browser import Watch, check_page, new_context
from tests.web.conftest import require_api
from tests.web.seed import ALL_TYPES_FIELDS, SeededUser, create_response_row, create_users
from tests.web.seed import publish_form as seed_form

pytestmark = pytest.mark.browser

DESKTOP = {"viewport": {"width": 1280, "height": 900}, "accept_downloads": True}
EXPORTS = (
    "/api/auth/session-login",
    "/api/forms/{id}/responses",
    "/api/forms/{id}/responses/export",
    "/api/forms/{id}/responses/export-pdfs",
)


@pytest.fixture
def watch() -> Iterator[Watch]:
    yield Watch()


def sign_in(page: Page, base: str, user: SeededUser, next_path: str) -> None:
    page.goto(f"{base}/login?next={next_path}")
    page.get_by_label("Email").fill(user.email)
    page.get_by_label("Password").fill(user.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}{next_path}")


def clinic(database_url: str) -> tuple[SeededUser, SeededUser, str, list[str]]:
    editor, viewer = create_users(database_url, [("Eddie Editor", "editor"), ("Vi", "viewer")])
    form_id, _ = seed_form(database_url, editor.organization_id, "Export intake", ALL_TYPES_FIELDS)
    return editor, viewer, form_id, [create_response_row(database_url, form_id) for _ in range(2)]


def test_an_editor_exports_csv_excel_and_the_ticked_pdfs(
    browser: Browser,
    server: ServerProcess,
    database_url: str,
    api_paths: set[str],
    watch: Watch,
) -> None:
    require_api(api_paths, *EXPORTS)
    editor, _, form_id, ids = clinic(database_url)
    base = server.base_url
    page = new_context(browser, watch, **DESKTOP).new_page()
    sign_in(page, base, editor, f"/forms/{form_id}/responses")
    expect(page.locator("#responses-table tbody tr")).to_have_count(2)
    check_page(page, "responses-exports")

    with page.expect_download() as csv_download:
        page.get_by_role("link", name="Export CSV").click()
    assert csv_download.value.suggested_filename.startswith("Export intake responses ")
    text = csv_download.value.path().read_bytes().decode("utf-8-sig")
    header, *rows = list(csv.reader(io.StringIO(text, newline="")))
    assert header[:2] == ["Response ID", "Confirmation"]
    assert sorted(row[0] for row in rows) == sorted(ids)
    assert "Full name (full_name)" in header and "Pat Patient" in rows[0]

    with page.expect_download() as xlsx_download:
        page.get_by_role("link", name="Export Excel").click()
    assert xlsx_download.value.suggested_filename.endswith(".xlsx")
    xlsx = io.BytesIO(xlsx_download.value.path().read_bytes())
    book = openpyxl.load_workbook(xlsx, read_only=True)
    assert len(list(book.worksheets[0].iter_rows())) == 3
    book.close()

    # The links follow the list's filter: a file holds what the page shows.
    page.get_by_label("Show", exact=True).select_option("reviewed")
    expect(page.get_by_role("link", name="Export CSV")).to_have_attribute(
        "href", f"/api/forms/{form_id}/responses/export?format=csv&status=reviewed"
    )
    page.get_by_label("Show", exact=True).select_option("")
    expect(page.locator("#responses-table tbody tr")).to_have_count(2)

    button = page.get_by_role("button", name="Download PDFs")
    expect(button).to_be_disabled()
    for box in page.get_by_role("checkbox", name="Select response").all():
        box.check()
    expect(page.get_by_role("button", name="Download PDFs (2)")).to_be_enabled()
    with page.expect_download(timeout=60_000) as zip_download:
        page.get_by_role("button", name="Download PDFs (2)").click()
    with zipfile.ZipFile(zip_download.value.path()) as archive:
        names = archive.namelist()
        # <response id>_<confirmation>.pdf, one per ticked response.
        assert sorted(name.rsplit("_", 1)[0] for name in names) == sorted(ids)
        for name in names:
            assert name.endswith(".pdf")
            assert (
                "Pat Patient" in PdfReader(io.BytesIO(archive.read(name))).pages[0].extract_text()
            )
    expect(page.locator("#notice-info")).to_contain_text("Downloaded 2 PDFs")
    assert watch.unexpected() == []


def test_a_viewer_is_offered_no_export(
    browser: Browser,
    server: ServerProcess,
    database_url: str,
    api_paths: set[str],
    watch: Watch,
) -> None:
    require_api(api_paths, *EXPORTS)
    _, viewer, form_id, _ = clinic(database_url)
    page = new_context(browser, watch, **DESKTOP).new_page()
    sign_in(page, server.base_url, viewer, f"/forms/{form_id}/responses")
    expect(page.locator("#responses-table tbody tr")).to_have_count(2)
    expect(page.get_by_role("link", name="Export CSV")).to_have_count(0)
    expect(page.get_by_role("button", name="Download PDFs")).to_have_count(0)
    expect(page.locator("#responses-table .select-response")).to_have_count(0)
    assert watch.unexpected() == []
