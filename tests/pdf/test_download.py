"""GET /responses/{id}/pdf serves the stored PDF only; the page's button POSTs to make it.

API.md "Pages": `/responses/{id}` has a button that generates the PDF with a POST;
`/responses/{id}/pdf` answers the stored PDF and generates nothing (a GET has no side
effects): 404 without one, 409 while one is being generated, no `pdf` token spent.
"""

from __future__ import annotations

import html
import re

import httpx
from fastapi import FastAPI
from redis.asyncio import Redis

from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from healthforms.responses.models import ResponsePdf
from healthforms.security.locks import PDF_LOCK_KEY
from healthforms.security.principal import Role
from tests.pdf.test_generate import count_events, pdf_text
from tests.support.response_factory import (
    UNICODE_NAME,
    PublishedForm,
    create_form,
    create_organization,
    create_response,
    evidence,
    intake_answers,
)
from tests.support.response_fixtures import AppWith
from tests.support.staff import signed_in_client

BROWSER = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
_TOKEN_RE = re.compile(r'name="csrf_token" value="([^"]*)"')


async def stored_pdf(db: Database, response_id: str) -> ResponsePdf | None:
    async with db.sessions() as session:
        return await session.get(ResponsePdf, response_id)


async def pdf_buckets(redis_client: Redis, redis_prefix: str) -> list[bytes]:
    """Every `pdf` rate bucket of this test's app."""
    pattern = f"{redis_prefix}ratelimit:*:pdf"
    return [key async for key in redis_client.scan_iter(match=pattern, count=500)]


def form_token(page: str) -> str:
    match = _TOKEN_RE.search(page)
    assert match, "no csrf_token field on the page"
    return html.unescape(match.group(1))


async def test_a_get_without_a_stored_pdf_generates_nothing_and_answers_404(
    db: Database,
    keys: KeyRing,
    clinic: PublishedForm,
    admin: httpx.AsyncClient,
    redis_client: Redis,
    redis_prefix: str,
) -> None:
    response_id = await create_response(db, keys, clinic, intake_answers())

    api = await admin.get(f"/responses/{response_id}/pdf")
    page = await admin.get(f"/responses/{response_id}/pdf", headers=BROWSER)

    assert api.status_code == 404
    assert api.json() == {
        "error": "No PDF has been generated for this response yet.",
        "code": "pdf_not_generated",
    }
    # Nothing was generated, stored, audited as generated, locked or charged.
    assert await stored_pdf(db, response_id) is None
    assert await count_events(db, "pdf.generated", response_id) == 0
    assert await count_events(db, "pdf.served", response_id) == 0
    assert await pdf_buckets(redis_client, redis_prefix) == []
    lock = f"{redis_prefix}{PDF_LOCK_KEY.format(response_id=response_id)}"
    assert await redis_client.exists(lock) == 0
    # A browser gets a page that says so and offers the button (a POST).
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert "No PDF yet" in page.text
    assert f'action="/responses/{response_id}/pdf"' in page.text
    assert 'method="post"' in page.text
    assert form_token(page.text)


async def test_another_organisations_response_is_not_found_either_way(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    other = (await create_form(db, await create_organization(db)))[0]
    response_id = await create_response(db, keys, other, intake_answers())
    assert (await admin.get(f"/responses/{response_id}/pdf")).json()["code"] == "not_found"
    posted = await admin.post(f"/responses/{response_id}/pdf")
    assert posted.status_code == 404
    assert await stored_pdf(db, response_id) is None


async def test_a_get_while_a_pdf_is_being_generated_answers_409(
    app: FastAPI,
    db: Database,
    keys: KeyRing,
    clinic: PublishedForm,
    admin: httpx.AsyncClient,
    redis_client: Redis,
) -> None:
    response_id = await create_response(db, keys, clinic, intake_answers())
    lock = app.state.hf.redis.key(PDF_LOCK_KEY.format(response_id=response_id))
    await redis_client.set(lock, "another-instance", px=60_000)

    api = await admin.get(f"/responses/{response_id}/pdf")
    page = await admin.get(f"/responses/{response_id}/pdf", headers=BROWSER)
    response_page = await admin.get(f"/responses/{response_id}", headers=BROWSER)

    assert api.status_code == 409
    assert api.json() == {"error": "PDF generation already in progress", "code": "pdf_in_progress"}
    assert page.status_code == 409
    assert "being generated" in page.text
    # The response page says so instead of offering a second generation.
    assert 'id="pdf-generate"' not in response_page.text
    assert "is being generated" in response_page.text
    assert await redis_client.get(lock) == b"another-instance"  # untouched
    assert await stored_pdf(db, response_id) is None


async def test_the_page_button_posts_then_the_page_offers_the_stored_pdf(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    answers = intake_answers()
    response_id = await create_response(db, keys, clinic, answers, evidence(answers))
    page_url = f"/responses/{response_id}"

    before = await admin.get(page_url, headers=BROWSER)
    assert before.status_code == 200
    assert 'id="pdf-generate"' in before.text and ">Generate PDF<" in before.text
    assert 'id="pdf-link"' not in before.text
    token = form_token(before.text)

    # A plain HTML form post: the token travels in the `csrf_token` field only.
    del admin.headers["X-CSRF-Token"]
    posted = await admin.post(f"{page_url}/pdf", data={"csrf_token": token}, headers=BROWSER)
    assert posted.status_code == 303
    assert posted.headers["location"] == f"{page_url}?pdf=generated"
    assert await stored_pdf(db, response_id) is not None
    assert await count_events(db, "pdf.generated", response_id) == 1
    assert await count_events(db, "pdf.served", response_id) == 0  # nothing delivered yet

    after = await admin.get(posted.headers["location"], headers=BROWSER)
    assert 'id="pdf-link"' in after.text and ">Download PDF<" in after.text
    assert 'id="pdf-generate"' not in after.text
    assert "The PDF is ready" in after.text

    download = await admin.get(f"{page_url}/pdf", headers=BROWSER)
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/pdf"
    assert download.headers["cache-control"] == "no-store"
    # Named after the form, the day and the confirmation code (ASCII only: no filename*).
    assert re.fullmatch(
        r'attachment; filename="new-patient-intake_\d{4}-\d\d-\d\d_[A-Z0-9]{4,32}\.pdf"',
        download.headers["content-disposition"],
    )
    assert UNICODE_NAME in pdf_text(download.content)
    assert await count_events(db, "pdf.served", response_id) == 1
    # Posting again stores nothing new.
    again = await admin.post(f"{page_url}/pdf", data={"csrf_token": token}, headers=BROWSER)
    assert again.status_code == 303
    assert await count_events(db, "pdf.generated", response_id) == 1


async def test_the_page_post_needs_the_csrf_token(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    response_id = await create_response(db, keys, clinic, intake_answers())
    del admin.headers["X-CSRF-Token"]
    for data in ({}, {"csrf_token": "forged.token"}):
        refused = await admin.post(f"/responses/{response_id}/pdf", data=data)
        assert refused.status_code == 403
        assert refused.json()["code"] == "csrf_invalid"
    assert await stored_pdf(db, response_id) is None
    assert await count_events(db, "pdf.generated", response_id) == 0


async def test_signed_out_the_page_post_goes_to_sign_in(
    db: Database, keys: KeyRing, clinic: PublishedForm, client: httpx.AsyncClient
) -> None:
    response_id = await create_response(db, keys, clinic, intake_answers())
    posted = await client.post(f"/responses/{response_id}/pdf")
    assert posted.status_code == 303
    assert posted.headers["location"] == f"/login?next=/responses/{response_id}/pdf"
    assert await stored_pdf(db, response_id) is None


async def test_the_page_post_spends_a_pdf_token_and_the_get_none(app_with: AppWith) -> None:
    async with app_with(rate_limit_pdf="2/min+0") as app:
        db: Database = app.state.hf.db
        org = await create_organization(db)
        form = (await create_form(db, org))[0]
        first = await create_response(db, app.state.hf.keys, form, intake_answers())
        second = await create_response(db, app.state.hf.keys, form, intake_answers())
        async with signed_in_client(app, org, Role.EDITOR) as (http, _):
            assert (await http.post(f"/responses/{first}/pdf")).status_code == 303
            for _ in range(5):
                assert (await http.get(f"/responses/{first}/pdf")).status_code == 200
            # A GET of a response without a PDF spends nothing either.
            assert (await http.get(f"/responses/{second}/pdf")).status_code == 404
            assert (await http.post(f"/responses/{second}/pdf")).status_code == 303
            refused = await http.post(f"/responses/{first}/pdf", headers=BROWSER)
    assert refused.status_code == 429
    assert refused.headers["content-type"].startswith("text/html")
