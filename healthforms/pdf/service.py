"""A response's PDF: generated once under the pdf-gen lock, stored encrypted, served again.

Generation (POST only: `generate-pdf`, the page's button) holds
`lock:pdf-gen:{<response_id>}` (409 `pdf_in_progress` to everyone else meanwhile),
re-checks for a stored PDF inside the lock, renders, and stores the result sealed with
the PDF's AAD, its SHA-256 and the lock's fencing number, checked in the same
transaction: a holder whose lock expired under a slow render cannot overwrite what a
newer holder wrote. Serving (`GET /responses/{id}/pdf`) only ever reads what is stored.

Expensive renders (a 1 MB response took 11 s of CPU):
- the answers of a response are capped at submission (`HEALTHFORMS_MAX_ANSWERS_BYTES`,
  submissions/validation.py);
- the embedded renderer runs in a child process (processes.py), killed at
  `HEALTHFORMS_PDF_RENDER_TIMEOUT`: the client gets 422 `pdf_too_expensive`, the lock
  is released (the exception leaves `hold`), nothing is stored, and the event loop
  never waited on the render;
- the CPU a render used is charged to the user's `pdf` bucket: the request took one
  token, and every full `HEALTHFORMS_PDF_CPU_SECONDS_PER_TOKEN` of CPU costs one more
  (a killed render: its whole time limit), into debt of up to one bucket. A user
  therefore gets about `rate x seconds_per_token` seconds of render CPU per period
  (10/min x 2 s: a third of a core), however the renders are shaped.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from healthforms.audit.events import LOCK_CONFLICT, PDF_GENERATED, PDF_SERVED, Outcome
from healthforms.audit.recorder import Auditor
from healthforms.branding.service import load_branding, logo_of
from healthforms.crypto.envelope import DecryptionFailed, Sealed, open_sealed, pdf_aad, seal
from healthforms.errors import Conflict, HealthformsError, NotFound, ServiceUnavailable
from healthforms.forms.schema import FieldDef, FieldType
from healthforms.identity.models import Organization
from healthforms.languages import DEFAULT_LANGUAGE
from healthforms.pdf.document import PdfFile
from healthforms.pdf.filenames import PdfFileName, in_language, pdf_filename
from healthforms.pdf.gotenberg import GotenbergRenderer
from healthforms.pdf.render import RenderJob, document_of, render_job
from healthforms.processes import ChildFailed, ChildrenBusy, ChildTimedOut
from healthforms.responses.models import ResponsePdf, ResponseRow
from healthforms.responses.service import (
    RESOURCE_TYPE,
    ResponseUnreadable,
    get_response,
    get_version,
    open_response,
)
from healthforms.security.locks import PDF_LOCK_KEY, PDF_LOCK_TTL_MS, LockBusy, LockUnavailable
from healthforms.security.principal import Principal
from healthforms.state import AppState
from healthforms.uploads.service import open_files

log = structlog.get_logger("healthforms.pdf")

PDF_LOCK_KIND = "pdf-gen"


class PdfInProgress(Conflict):
    code, message = "pdf_in_progress", "PDF generation already in progress"


class PdfNotGenerated(NotFound):
    code = "pdf_not_generated"
    message = "No PDF has been generated for this response yet."


class PdfTooExpensive(HealthformsError):
    """The render ran past HEALTHFORMS_PDF_RENDER_TIMEOUT and was stopped. Not a 503:
    the same response would take as long again, so inviting retries only burns CPU."""

    status_code, code = 422, "pdf_too_expensive"
    message = (
        "This response took too long to print as a PDF and printing was stopped. "
        "Its answers can still be read on the response page."
    )


class PdfBusy(ServiceUnavailable):
    code, message = "pdf_busy", "Every PDF printer is busy. Try again in a few seconds."

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": "5"})


class PdfRenderFailed(HealthformsError):
    status_code, code, message = 500, "pdf_render_failed", "The PDF could not be printed."


PdfState = Literal["stored", "in_progress", "none"]


@dataclass(frozen=True, slots=True)
class DeliveredPdf:
    content: bytes
    sha256: str
    filename: PdfFileName  # form, submission date, confirmation code (filenames.py)
    generated: bool  # this request made it (False: served the stored one)


def file_stem(*parts: str) -> str:
    """The parts joined by spaces, reduced to characters every browser and OS accept in
    a file name (no path separators, no control characters), at most 160 of them; ""
    when nothing is left."""
    base = unicodedata.normalize("NFC", " ".join(p for p in parts if p))
    base = re.sub(r'[\x00-\x1f\x7f"\\/:*?<>|;]+', " ", base)
    return re.sub(r"\s+", " ", base).strip(" .")[:160]


def render_queue_wait(timeout_s: float) -> float:
    """How long a render waits for a free render process before 503 `pdf_busy`: a burst
    of ordinary renders queues, an endless queue does not form."""
    return max(30.0, 2 * timeout_s)


def extra_tokens(cpu_s: float, seconds_per_token: float) -> int:
    """`pdf` tokens a render costs beyond the one its request took: one per full
    `seconds_per_token` of CPU (a render of 0.3 s costs nothing more)."""
    if cpu_s <= 0 or seconds_per_token <= 0:
        return 0
    return int(cpu_s // seconds_per_token)


def _open_pdf(state: AppState, stored: ResponsePdf) -> bytes:
    sealed = Sealed(stored.ciphertext, stored.wrapped_key, stored.key_id)
    try:
        content = open_sealed(state.keys, sealed, pdf_aad(stored.response_id))
    except DecryptionFailed as exc:
        log.error("pdf_decrypt_failed", response_id=stored.response_id, reason=str(exc))
        raise ResponseUnreadable() from None
    if hashlib.sha256(content).hexdigest() != stored.sha256:
        log.error("pdf_decrypt_failed", response_id=stored.response_id, reason="sha256 mismatch")
        raise ResponseUnreadable()
    return content


def version_field(raw: Any) -> FieldDef:
    """A frozen field definition; one that no longer validates still prints as text."""
    try:
        return FieldDef.model_validate(raw)
    except ValidationError:
        # A PDF must never drop a question: keep its id and label, print its answer as text.
        raw = raw if isinstance(raw, dict) else {}
        log.warning("pdf_field_fallback", field_id=str(raw.get("id", ""))[:64])
        return FieldDef.model_construct(
            id=str(raw.get("id", "")),
            type=FieldType.TEXT,
            label=str(raw.get("label") or raw.get("id") or "Question"),
            required=False,
            options=None,
            show_when=None,
        )


class PdfService:
    def __init__(self, state: AppState) -> None:
        self.state = state
        self.locks = state.locks

    async def _render(self, principal: Principal, job: RenderJob) -> bytes:
        settings = self.state.settings
        if settings.gotenberg_url:
            # Chromium's CPU is Gotenberg's, bounded by its own timeout (502 past it).
            renderer = GotenbergRenderer(
                settings.gotenberg_url, timeout_s=settings.gotenberg_timeout_s
            )
            return await renderer.render(await asyncio.to_thread(document_of, job))
        timeout_s = settings.pdf_render_timeout_s
        try:
            result = await self.state.workers.run(
                render_job, job, timeout_s=timeout_s, wait_s=render_queue_wait(timeout_s)
            )
        except ChildTimedOut:
            # Killed: it used (at least) its whole time limit.
            extra = await self._charge(principal, timeout_s)
            log.warning(
                "pdf_render_timeout",
                response_id=job.response_id,
                timeout_s=timeout_s,
                extra_tokens=extra,
            )
            raise PdfTooExpensive() from None
        except ChildrenBusy:
            log.warning("pdf_render_busy", response_id=job.response_id)
            raise PdfBusy() from None
        except ChildFailed as exc:
            log.error("pdf_render_failed", response_id=job.response_id, error=exc.error_type)
            raise PdfRenderFailed() from None
        extra = await self._charge(principal, result.cpu_s)
        log.info(
            "pdf_rendered",
            response_id=job.response_id,
            cpu_s=round(result.cpu_s, 3),
            wall_s=round(result.wall_s, 3),
            extra_tokens=extra,
        )
        return result.value

    async def _charge(self, principal: Principal, cpu_s: float) -> int:
        """Charge the render's CPU to the user's `pdf` bucket; return the extra tokens."""
        extra = extra_tokens(cpu_s, self.state.settings.pdf_cpu_seconds_per_token)
        if extra:
            limiter = self.state.limiter
            # At most one bucket of debt: a bounded wait, whatever one render cost.
            debt = limiter.policies["pdf"].capacity
            await limiter.charge("pdf", principal.user_id, extra, max_debt=debt)
        return extra

    async def _stored(
        self, principal: Principal, response_id: str
    ) -> tuple[PdfFileName, ResponsePdf | None]:
        """(file name, stored PDF or None), organisation-scoped: 404 for anyone else's."""
        async with self.state.db.sessions() as session:
            row = await get_response(session, principal.organization_id, response_id)
            version = await get_version(session, row)
            stored = await session.get(ResponsePdf, row.id)
            filename = pdf_filename(version.title, row.submitted_at, row.confirmation)
            return filename, stored

    async def job(self, row: ResponseRow, language: str | None = None) -> RenderJob:
        """What the renderer needs: the response's own version's labels and its answers,
        in `language` (by default the one the patient answered in)."""
        async with self.state.db.sessions() as session:
            version = await get_version(session, row)
            organization = await session.get(Organization, row.organization_id)
            branding = await load_branding(session, row.organization_id)
            logo = await logo_of(session, row.organization_id)
            attached = await open_files(session, self.state.keys, row.id)
        content = open_response(self.state.keys, row)
        name = branding.name if branding else (organization.name if organization else "")
        files = {meta.id: PdfFile(meta.media_type, data, meta.pages) for meta, data in attached}
        return RenderJob(
            organization=name,
            title=version.title,
            description=version.description,
            version=row.form_version,
            response_id=row.id,
            submitted_at=row.submitted_at,
            fields=[version_field(raw) for raw in version.fields],
            answers=content.answers,
            signatures=content.signatures,
            confirmation=row.confirmation,
            form_id=row.form_id,
            logo=logo.logo if logo is not None else None,
            files=files,
            scores=content.scores,
            language=language or row.language or DEFAULT_LANGUAGE,
            translations=dict(version.translations or {}),
        )

    async def copy_in(
        self, principal: Principal, response_id: str, language: str, auditor: Auditor
    ) -> DeliveredPdf:
        """The response printed in `language` (the staff copy in the clinic's language of
        a response answered in another), rendered for this download and never stored:
        the stored PDF stays the patient's own. The caller takes the `pdf` token."""
        async with self.state.db.sessions() as session:
            row = await get_response(session, principal.organization_id, response_id)
            version = await get_version(session, row)
        content = await self._render(principal, await self.job(row, language))
        await auditor.record(PDF_SERVED, resource_type=RESOURCE_TYPE, resource_id=row.id)
        name = pdf_filename(version.title, row.submitted_at, row.confirmation)
        return DeliveredPdf(
            content=content,
            sha256=hashlib.sha256(content).hexdigest(),
            filename=in_language(name, language),
            generated=True,
        )

    async def state_of(self, response_id: str) -> PdfState:
        """Whether the response's PDF is stored, being generated, or neither (the page's
        button). The response must already be known to be the caller's."""
        async with self.state.db.sessions() as session:
            if await session.get(ResponsePdf, response_id) is not None:
                return "stored"
        try:
            holder = await self.locks.holder(PDF_LOCK_KEY.format(response_id=response_id))
        except LockUnavailable:
            return "none"  # cannot tell: offer the button, the POST will know
        return "in_progress" if holder is not None else "none"

    async def stored_pdf(self, principal: Principal, response_id: str) -> bytes | None:
        """The stored PDF's content, or None when none is stored; organisation-scoped
        (404 for anyone else's). Records nothing: the caller audits the delivery (the
        exports' ZIP records one event for all of its PDFs)."""
        _, stored = await self._stored(principal, response_id)
        return None if stored is None else _open_pdf(self.state, stored)

    async def serve_stored(
        self, principal: Principal, response_id: str, auditor: Auditor
    ) -> DeliveredPdf:
        """The stored PDF, never generated here (a GET has no side effects): 404
        `pdf_not_generated` without one, 409 `pdf_in_progress` while one is generated."""
        filename, stored = await self._stored(principal, response_id)
        if stored is None:
            holder = await self.locks.holder(PDF_LOCK_KEY.format(response_id=response_id))
            if holder is not None:
                raise PdfInProgress()
            raise PdfNotGenerated()
        content = _open_pdf(self.state, stored)
        await auditor.record(PDF_SERVED, resource_type=RESOURCE_TYPE, resource_id=response_id)
        return DeliveredPdf(
            content=content,
            sha256=hashlib.sha256(content).hexdigest(),
            filename=filename,
            generated=False,
        )

    async def generate(
        self, principal: Principal, response_id: str, auditor: Auditor
    ) -> tuple[PdfFileName, bytes, bool]:
        """(file name, content, generated now): the stored PDF, or one generated now
        (once, under the lock) and stored. Delivers nothing: no `pdf.served` here."""
        filename, stored = await self._stored(principal, response_id)
        if stored is not None:
            return filename, _open_pdf(self.state, stored), False
        try:
            content, generated = await self._generate(principal, response_id, auditor)
        except LockBusy:
            await auditor.record(
                LOCK_CONFLICT,
                outcome=Outcome.DENIED,
                resource_type=RESOURCE_TYPE,
                resource_id=response_id,
            )
            raise PdfInProgress() from None
        return filename, content, generated

    async def deliver(
        self, principal: Principal, response_id: str, auditor: Auditor
    ) -> DeliveredPdf:
        """The response's PDF: the stored one, or generated now (once) and stored."""
        filename, content, generated = await self.generate(principal, response_id, auditor)
        await auditor.record(PDF_SERVED, resource_type=RESOURCE_TYPE, resource_id=response_id)
        return DeliveredPdf(
            content=content,
            sha256=hashlib.sha256(content).hexdigest(),
            filename=filename,
            generated=generated,
        )

    async def _generate(
        self, principal: Principal, response_id: str, auditor: Auditor
    ) -> tuple[bytes, bool]:
        key = PDF_LOCK_KEY.format(response_id=response_id)
        async with self.locks.hold(key, PDF_LOCK_TTL_MS, kind=PDF_LOCK_KIND) as held:
            # Re-check inside the lock: the previous holder may have just stored it.
            async with self.state.db.sessions() as session:
                row = await get_response(session, principal.organization_id, response_id)
                stored = await session.get(ResponsePdf, row.id)
            if stored is not None:
                return _open_pdf(self.state, stored), False

            content = await self._render(principal, await self.job(row))
            digest = hashlib.sha256(content).hexdigest()
            sealed = seal(self.state.keys, content, pdf_aad(row.id))
            try:
                async with self.state.db.sessions() as session, session.begin():
                    # The lock's key is the fenced resource (the database fallback of
                    # the lock service numbers its leases above what was written here).
                    if not await self.locks.fence_allows(session, held.key, held.fence):
                        # A newer holder took over after our lease ran out: it writes.
                        log.warning("pdf_fenced_out", response_id=row.id, fence=held.fence)
                        raise PdfInProgress()
                    session.add(
                        ResponsePdf(
                            response_id=row.id,
                            ciphertext=sealed.ciphertext,
                            wrapped_key=sealed.wrapped_key,
                            key_id=sealed.key_id,
                            sha256=digest,
                            size_bytes=len(content),
                            fence=held.fence,
                        )
                    )
                    # The stored PDF (PHI) and its event commit together, or neither.
                    event = auditor.event(
                        PDF_GENERATED, resource_type=RESOURCE_TYPE, resource_id=row.id
                    )
                    await auditor.record_in(session, event)
            except IntegrityError:
                # Stored meanwhile by a holder with a higher fence: serve that one.
                async with self.state.db.sessions() as session:
                    existing = (
                        await session.execute(
                            select(ResponsePdf).where(ResponsePdf.response_id == row.id)
                        )
                    ).scalar_one_or_none()
                if existing is None:  # the fence row raced instead: a newer holder writes
                    raise PdfInProgress() from None
                return _open_pdf(self.state, existing), False
        log.info("pdf_generated", response_id=row.id, size_bytes=len(content), fence=held.fence)
        auditor.committed(event)
        return content, True
