"""GOTENBERG_URL: HTML printed by an external Chromium, against a fake Gotenberg on 127.0.0.1.

The fake is a real HTTP server in a thread: one mode answers a PDF, one 500s, one hangs,
one answers something that is not a PDF.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi import FastAPI
from fpdf import FPDF
from redis.asyncio import Redis
from sqlalchemy import func, select

from healthforms.app import create_app
from healthforms.audit.models import AuditEventRow
from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from healthforms.errors import UpstreamFailed
from healthforms.forms.schema import FieldDef
from healthforms.pdf.document import PdfDocument, build_document
from healthforms.pdf.gotenberg import CONVERT_PATH, GotenbergRenderer, render_html
from healthforms.responses.models import ResponsePdf
from tests.support.identity import identity_settings
from tests.support.response_factory import (
    INTAKE_FIELDS,
    UNICODE_NAME,
    create_form,
    create_organization,
    create_response,
    evidence,
    intake_answers,
)
from tests.support.staff import signed_in_client


def fake_pdf() -> bytes:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.cell(0, 10, "printed by the fake gotenberg")
    return bytes(pdf.output())


FAKE_PDF = fake_pdf()


@dataclass
class FakeGotenberg:
    url: str
    mode: str = "ok"
    requests: list[tuple[str, bytes]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def gotenberg() -> Iterator[FakeGotenberg]:
    fake = FakeGotenberg(url="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep test output clean
            return

        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            length = int(self.headers.get("content-length", "0"))
            fake.requests.append((self.path, self.rfile.read(length)))
            if fake.mode == "hang":
                fake.release.wait(timeout=30)
                return
            status, body, kind = {
                "ok": (200, FAKE_PDF, "application/pdf"),
                "error": (500, b"chromium crashed", "text/plain"),
                "not_pdf": (200, b"<html>oops</html>", "text/html"),
            }[fake.mode]
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        fake.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def sample_document() -> PdfDocument:
    answers = intake_answers(email="<script>alert('x')</script>@example.org")
    return build_document(
        organization="Sunrise & Co",
        title="Intake <b>form</b>",
        description="",
        version=2,
        response_id="rsp_goten",
        submitted_at=datetime(2026, 11, 25, 19, 54, 37, tzinfo=UTC),
        fields=[FieldDef.model_validate(f) for f in INTAKE_FIELDS],
        answers=answers,
        signatures=evidence(answers),
    )


def test_the_html_is_escaped_and_carries_answers_signature_and_page_numbers() -> None:
    page, footer = render_html(sample_document())
    assert UNICODE_NAME in page
    assert "&lt;script&gt;" in page and "<script>" not in page
    assert "Intake &lt;b&gt;form&lt;/b&gt;" in page
    assert 'src="data:image/png;base64,iVBORw0KGgo' in page
    assert "Form version hash: " + "a" * 64 in page
    assert "Packs per day" not in page  # hidden by showWhen
    assert '<span class="pageNumber"></span>' in footer
    assert '<span class="totalPages"></span>' in footer
    assert "Sunrise &amp; Co" in footer


async def test_the_renderer_posts_html_to_gotenberg_and_returns_its_pdf(
    gotenberg: FakeGotenberg,
) -> None:
    renderer = GotenbergRenderer(gotenberg.url, timeout_s=5)
    content = await renderer.render(sample_document())
    assert content == FAKE_PDF
    [(path, body)] = gotenberg.requests
    assert path == CONVERT_PATH
    assert b'filename="index.html"' in body
    assert b'filename="footer.html"' in body
    assert b'name="paperWidth"' in body
    assert UNICODE_NAME.encode() in body


@pytest.mark.parametrize("mode", ["error", "hang", "not_pdf"])
async def test_every_gotenberg_failure_is_upstream_failed(
    mode: str, gotenberg: FakeGotenberg
) -> None:
    gotenberg.mode = mode
    renderer = GotenbergRenderer(gotenberg.url, timeout_s=0.5)
    with pytest.raises(UpstreamFailed) as failure:
        await renderer.render(sample_document())
    assert failure.value.status_code == 502
    assert failure.value.code == "upstream_failed"


async def test_a_refused_connection_is_upstream_failed() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    renderer = GotenbergRenderer(f"http://127.0.0.1:{port}", timeout_s=2)
    with pytest.raises(UpstreamFailed):
        await renderer.render(sample_document())


@pytest.fixture
async def gotenberg_app(
    database_url: str,
    redis_url: str,
    redis_prefix: str,
    redis_client: Redis,
    tmp_path: Path,
    gotenberg: FakeGotenberg,
) -> AsyncIterator[FastAPI]:
    settings = identity_settings(
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        data_dir=tmp_path / "data",
        gotenberg_url=gotenberg.url,
        # Short enough that the "hang" case gives up quickly, long enough that the retry
        # against a healthy renderer is not cut off on a loaded CI machine (it was, at 0.5).
        gotenberg_timeout_s=2.0,
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


async def generated_count(db: Database, response_id: str) -> int:
    async with db.sessions() as session:
        query = (
            select(func.count())
            .select_from(AuditEventRow)
            .where(AuditEventRow.action == "pdf.generated")
            .where(AuditEventRow.resource_id == response_id)
        )
        return int((await session.execute(query)).scalar_one())


async def test_generate_pdf_through_gotenberg_stores_its_pdf(
    gotenberg_app: FastAPI, gotenberg: FakeGotenberg
) -> None:
    db: Database = gotenberg_app.state.hf.db
    keys: KeyRing = gotenberg_app.state.hf.keys
    org = await create_organization(db)
    form = (await create_form(db, org))[0]
    response_id = await create_response(db, keys, form, intake_answers())
    async with signed_in_client(gotenberg_app, org) as (http, _):
        first = await http.post(f"/api/responses/{response_id}/generate-pdf")
        second = await http.post(f"/api/responses/{response_id}/generate-pdf")
    assert first.status_code == 200
    assert first.content == FAKE_PDF == second.content
    assert len(gotenberg.requests) == 1  # generated once, then served from the database
    assert await generated_count(db, response_id) == 1


@pytest.mark.parametrize("mode", ["error", "hang", "not_pdf"])
async def test_generate_pdf_answers_502_when_gotenberg_fails_and_can_retry(
    mode: str, gotenberg_app: FastAPI, gotenberg: FakeGotenberg
) -> None:
    db: Database = gotenberg_app.state.hf.db
    keys: KeyRing = gotenberg_app.state.hf.keys
    org = await create_organization(db)
    form = (await create_form(db, org))[0]
    response_id = await create_response(db, keys, form, intake_answers())
    gotenberg.mode = mode
    async with signed_in_client(gotenberg_app, org) as (http, _):
        failed = await http.post(f"/api/responses/{response_id}/generate-pdf")
        assert failed.status_code == 502
        assert failed.json() == {
            "error": "The PDF renderer failed. Try again later.",
            "code": "upstream_failed",
        }
        # Nothing stored, nothing audited as generated, and the lock was released.
        async with db.sessions() as session:
            assert await session.get(ResponsePdf, response_id) is None
        assert await generated_count(db, response_id) == 0
        gotenberg.mode = "ok"
        retried = await http.post(f"/api/responses/{response_id}/generate-pdf")
    assert retried.status_code == 200
    assert retried.content == FAKE_PDF
    assert await generated_count(db, response_id) == 1
