"""FHIR downloads in Chromium (docs/fhir.md): an editor downloads a form's responses as
NDJSON and its Questionnaire from the responses page, and one response's
QuestionnaireResponse from the response page; a viewer gets the response's only."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fhir.resources.R4B.questionnaire import Questionnaire
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse
from playwright.sync_api import Browser, expect

from tests.support.servers import ServerProcess
from tests.web.browser import Watch, check_page, new_context
from tests.web.conftest import require_api
from tests.web.seed import ALL_TYPES_FIELDS, create_response_row, create_users
from tests.web.seed import publish_form as seed_form
from tests.web.test_export_pages import sign_in

pytestmark = pytest.mark.browser

DESKTOP = {"viewport": {"width": 1280, "height": 900}, "accept_downloads": True}
FIXTURE = Path(__file__).resolve().parent.parent / "fhir" / "fixtures" / "phq9-loinc-44249-1.json"
FHIR = (
    "/api/auth/session-login",
    "/api/forms/import-fhir",
    "/api/forms/{id}/fhir",
    "/api/forms/{id}/responses/fhir",
    "/api/responses/{id}/fhir",
)


@pytest.fixture
def watch() -> Iterator[Watch]:
    yield Watch()


def test_an_editor_downloads_fhir_and_a_viewer_only_a_response(
    browser: Browser,
    server: ServerProcess,
    database_url: str,
    api_paths: set[str],
    watch: Watch,
) -> None:
    require_api(api_paths, *FHIR)
    editor, viewer = create_users(database_url, [("Eddie Editor", "editor"), ("Vi", "viewer")])
    form_id, _ = seed_form(database_url, editor.organization_id, "FHIR intake", ALL_TYPES_FIELDS)
    ids = [create_response_row(database_url, form_id) for _ in range(2)]
    base = server.base_url
    page = new_context(browser, watch, **DESKTOP).new_page()
    sign_in(page, base, editor, f"/forms/{form_id}/responses")
    expect(page.locator("#responses-table tbody tr")).to_have_count(2)
    check_page(page, "responses-fhir")

    with page.expect_download() as ndjson:
        page.get_by_role("link", name="Export FHIR").click()
    assert ndjson.value.suggested_filename.endswith(".ndjson")
    lines = ndjson.value.path().read_text().splitlines()
    resources = [QuestionnaireResponse.model_validate(json.loads(line)) for line in lines]
    assert sorted(str(r.identifier.value) for r in resources if r.identifier) == sorted(ids)
    with page.expect_download() as questionnaire:
        page.get_by_role("link", name="FHIR Questionnaire").click()
    Questionnaire.model_validate(json.loads(questionnaire.value.path().read_text()))
    # The NDJSON link follows the list's filter, like the CSV one.
    page.get_by_label("Show", exact=True).select_option("reviewed")
    expect(page.get_by_role("link", name="Export FHIR")).to_have_attribute(
        "href", f"/api/forms/{form_id}/responses/fhir?status=reviewed"
    )

    page.goto(f"{base}/forms")
    check_page(page, "forms-fhir")
    with page.expect_download() as listed:
        page.get_by_role("link", name="FHIR Questionnaire of FHIR intake").click()
    assert json.loads(listed.value.path().read_text())["title"] == "FHIR intake"

    page.goto(f"{base}/responses/{ids[0]}")
    check_page(page, "response-fhir")
    with page.expect_download() as one:
        page.get_by_role("link", name="Download FHIR").click()
    body = json.loads(one.value.path().read_text())
    assert QuestionnaireResponse.model_validate(body).identifier.value == ids[0]  # type: ignore[union-attr]
    assert "Pat Patient" in json.dumps(body)

    viewer_page = new_context(browser, watch, **DESKTOP).new_page()
    sign_in(viewer_page, base, viewer, f"/forms/{form_id}/responses")
    expect(viewer_page.locator("#responses-table tbody tr")).to_have_count(2)
    expect(viewer_page.get_by_role("link", name="Export FHIR")).to_have_count(0)
    viewer_page.goto(f"{base}/responses/{ids[1]}")
    expect(viewer_page.get_by_role("link", name="Download FHIR")).to_have_count(1)
    assert watch.unexpected() == []


def test_an_editor_imports_a_questionnaire_and_reads_what_was_not_imported(
    browser: Browser,
    server: ServerProcess,
    database_url: str,
    api_paths: set[str],
    watch: Watch,
) -> None:
    require_api(api_paths, *FHIR)
    (editor,) = create_users(database_url, [("Ima Importer", "editor")])
    base = server.base_url
    page = new_context(browser, watch, **DESKTOP).new_page()
    sign_in(page, base, editor, "/forms/new")

    page.get_by_label("Questionnaire file (FHIR R4 JSON)").set_input_files(str(FIXTURE))
    page.get_by_role("button", name="Import").click()

    result = page.locator("#fhir-import-result")
    expect(result).to_contain_text("as a draft with 11 fields")
    expect(result.get_by_role("heading", name=re.compile(r"^Not imported"))).to_be_visible()
    expect(result).to_contain_text("sdc-questionnaire-calculatedExpression")
    expect(result).to_contain_text("imported as field id q_44250-9")
    check_page(page, "fhir-import")
    result.get_by_role("link", name="Open the imported form").click()
    page.wait_for_url(re.compile(rf"{re.escape(base)}/forms/frm_[^/]+$"))
    assert watch.unexpected() == []
