"""A response's PDF: generated once under the pdf-gen lock, stored encrypted, served again.

Generation holds `lock:pdf-gen:{<response_id>}` (409 `pdf_in_progress` to everyone
else meanwhile), re-checks for a stored PDF inside the lock, renders off the event
loop, and stores the result sealed with the PDF's AAD, its SHA-256 and the lock's
fencing number, checked in the same transaction: a holder whose lock expired under a
slow render cannot overwrite what a newer holder wrote.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from healthforms.audit.events import LOCK_CONFLICT, PDF_GENERATED, PDF_SERVED, Outcome
from healthforms.audit.recorder import Auditor
from healthforms.crypto.envelope import DecryptionFailed, Sealed, open_sealed, pdf_aad, seal
from healthforms.errors import Conflict
from healthforms.forms.schema import FieldDef, FieldType
from healthforms.identity.models import Organization
from healthforms.pdf.document import PdfDocument, build_document
from healthforms.pdf.gotenberg import GotenbergRenderer
from healthforms.pdf.render import render_pdf
from healthforms.responses.models import ResponsePdf, ResponseRow
from healthforms.responses.service import (
    RESOURCE_TYPE,
    ResponseUnreadable,
    get_response,
    get_version,
    open_response,
)
from healthforms.security.locks import PDF_LOCK_KEY, PDF_LOCK_TTL_MS, LockBusy
from healthforms.security.principal import Principal
from healthforms.state import AppState

log = structlog.get_logger("healthforms.pdf")

PDF_LOCK_KIND = "pdf-gen"


class PdfInProgress(Conflict):
    code, message = "pdf_in_progress", "PDF generation already in progress"


@dataclass(frozen=True, slots=True)
class DeliveredPdf:
    content: bytes
    sha256: str
    filename: str  # after the form version's title, safe for Content-Disposition
    generated: bool  # this request made it (False: served the stored one)


def pdf_filename(title: str) -> str:
    """`<form title>.pdf`, reduced to characters every browser and OS accept."""
    base = unicodedata.normalize("NFC", title)
    base = re.sub(r'[\x00-\x1f\x7f"\\/:*?<>|;]+', " ", base)
    base = re.sub(r"\s+", " ", base).strip(" .")[:120]
    return f"{base or 'response'}.pdf"


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

    async def _render(self, doc: PdfDocument) -> bytes:
        url = self.state.settings.gotenberg_url
        if url:
            renderer = GotenbergRenderer(url, timeout_s=self.state.settings.gotenberg_timeout_s)
            return await renderer.render(doc)
        # fpdf2 is pure Python and CPU-bound: keep the event loop serving meanwhile.
        return await asyncio.to_thread(render_pdf, doc)

    async def _stored(
        self, principal: Principal, response_id: str
    ) -> tuple[str, ResponsePdf | None]:
        """(file name, stored PDF or None), organisation-scoped: 404 for anyone else's."""
        async with self.state.db.sessions() as session:
            row = await get_response(session, principal.organization_id, response_id)
            version = await get_version(session, row)
            stored = await session.get(ResponsePdf, row.id)
            return pdf_filename(version.title), stored

    async def document(self, row: ResponseRow) -> PdfDocument:
        """The PDF model of a response: its own version's labels, shown fields only."""
        async with self.state.db.sessions() as session:
            version = await get_version(session, row)
            organization = await session.get(Organization, row.organization_id)
        content = open_response(self.state.keys, row)
        fields = [version_field(raw) for raw in version.fields]
        return build_document(
            organization=organization.name if organization else "",
            title=version.title,
            description=version.description,
            version=row.form_version,
            response_id=row.id,
            submitted_at=row.submitted_at,
            fields=fields,
            answers=content.answers,
            signatures=content.signatures,
        )

    async def deliver(
        self, principal: Principal, response_id: str, auditor: Auditor
    ) -> DeliveredPdf:
        """The response's PDF: the stored one, or generated now (once) and stored."""
        filename, stored = await self._stored(principal, response_id)
        if stored is None:
            try:
                stored_or_new = await self._generate(principal, response_id, auditor)
            except LockBusy:
                await auditor.record(
                    LOCK_CONFLICT,
                    outcome=Outcome.DENIED,
                    resource_type=RESOURCE_TYPE,
                    resource_id=response_id,
                )
                raise PdfInProgress() from None
            content, generated = stored_or_new
        else:
            content, generated = _open_pdf(self.state, stored), False
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

            content = await self._render(await self.document(row))
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
        await auditor.record(PDF_GENERATED, resource_type=RESOURCE_TYPE, resource_id=row.id)
        return content, True
