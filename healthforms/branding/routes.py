"""Branding (docs/branding.md): the admin's API, and the public stylesheet and logo.

`GET/PUT /api/organization/branding`, `PUT/DELETE /api/organization/branding/logo`
(admins change it, any member of staff reads it; each change commits with its audit
event). `GET /branding/{organizationId}.css` and `GET /branding/{organizationId}/logo`
are what a patient's browser loads: the accent as a stylesheet, because the pages' CSP
allows no inline style, and the re-encoded logo; both with an ETag and a cache lifetime
(their URLs carry the branding's revision, so a change is never hidden by a cache).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request, Response
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.audit.events import BRANDING_LOGO_REMOVED, BRANDING_LOGO_SET, BRANDING_UPDATED
from healthforms.audit.recorder import Auditor, AuditorDep
from healthforms.branding.service import (
    CACHE,
    MAX_LOGO_BYTES,
    BrandingService,
    LogoRefused,
    branding_json,
    clean_logo,
    logo_of,
    patient_branding,
    updated_at_of,
)
from healthforms.errors import BadRequest, NotFound, ValidationFailed
from healthforms.security.context import AdminPrincipal, CurrentPrincipal
from healthforms.state import DbSessionDep

router = APIRouter(tags=["branding"])

RESOURCE_TYPE = "organization"
# Public, but revalidated hourly: the URL's ?v= changes with every change anyway.
PUBLIC_CACHE = "public, max-age=3600"


async def _json(service: BrandingService) -> dict[str, object]:
    branding, row = await service.current()
    return branding_json(branding, updated_at_of(row))


@router.get("/api/organization/branding")
async def get_branding(principal: CurrentPrincipal, session: DbSessionDep) -> dict[str, object]:
    return await _json(BrandingService(session, principal.organization_id))


# What a change did, for its audit event: (action, detail), or None when it changed nothing.
Change = Callable[[], Awaitable[tuple[str, dict[str, object] | None] | None]]


async def _apply(
    session: AsyncSession, auditor: Auditor, organization_id: str, change: Change
) -> None:
    """Run `change` and commit it with its audit event. Two first-ever saves of one
    organisation race to insert its branding row: the loser's insert fails on the
    primary key, and it runs again against the row the winner wrote (never a 500)."""
    for attempt in (1, 2):
        try:
            outcome = await change()
            if outcome is None:
                return
            action, detail = outcome
            event = auditor.event(
                action, resource_type=RESOURCE_TYPE, resource_id=organization_id, detail=detail
            )
            await auditor.record_in(session, event)
            await session.commit()
        except IntegrityError:
            await session.rollback()
            if attempt == 2:
                raise
            continue
        auditor.committed(event)
        CACHE.forget(organization_id)
        return


@router.put("/api/organization/branding")
async def put_branding(
    request: Request, principal: AdminPrincipal, session: DbSessionDep, auditor: AuditorDep
) -> dict[str, object]:
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest() from None
    if not isinstance(body, dict):
        raise ValidationFailed({"body": "Send a JSON object."})
    service = BrandingService(session, principal.organization_id)

    async def change() -> tuple[str, dict[str, object] | None] | None:
        changed = await service.update(body)
        return (BRANDING_UPDATED, {"changed": changed}) if changed else None

    await _apply(session, auditor, principal.organization_id, change)
    return await _json(service)


@router.put("/api/organization/branding/logo")
async def put_logo(
    request: Request, principal: AdminPrincipal, session: DbSessionDep, auditor: AuditorDep
) -> dict[str, object]:
    """The logo as the request body (`Content-Type: image/png` or `image/jpeg`); the
    type is decided by the content, never by the header or a file name."""
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_LOGO_BYTES:
            raise LogoRefused("is larger than 1 MB")
    # Decoding and re-encoding is CPU work: off the event loop.
    logo = await asyncio.to_thread(clean_logo, bytes(data))
    service = BrandingService(session, principal.organization_id)

    async def change() -> tuple[str, dict[str, object] | None]:
        await service.set_logo(logo)
        detail: dict[str, object] = {
            "type": logo.media_type,
            "width": logo.width,
            "height": logo.height,
            "bytes": len(logo.data),
        }
        return BRANDING_LOGO_SET, detail

    await _apply(session, auditor, principal.organization_id, change)
    return await _json(service)


@router.delete("/api/organization/branding/logo")
async def delete_logo(
    principal: AdminPrincipal, session: DbSessionDep, auditor: AuditorDep
) -> dict[str, object]:
    service = BrandingService(session, principal.organization_id)

    async def change() -> tuple[str, dict[str, object] | None] | None:
        return (BRANDING_LOGO_REMOVED, None) if await service.remove_logo() else None

    await _apply(session, auditor, principal.organization_id, change)
    return await _json(service)


def _cached(request: Request, body: bytes, media_type: str, etag: str) -> Response:
    headers = {"ETag": etag, "Cache-Control": PUBLIC_CACHE}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(content=body, media_type=media_type, headers=headers)


@router.get("/branding/{organization_id}.css", include_in_schema=False)
async def branding_stylesheet(
    organization_id: str, request: Request, session: DbSessionDep
) -> Response:
    """The accent's custom properties (web/static/css/app.css reads them); loaded only
    by pages of an organisation that set one, else 404."""
    branding = await patient_branding(session, organization_id[:64])
    if branding is None or branding.accent is None:
        raise NotFound()
    accent = branding.accent
    css = (
        ":root {\n"
        f"  --primary: {accent.primary};\n"
        f"  --primary-hover: {accent.hover};\n"
        f"  --primary-soft: {accent.soft};\n"
        "}\n"
    ).encode()
    etag = '"' + hashlib.sha256(css).hexdigest()[:32] + '"'
    return _cached(request, css, "text/css; charset=utf-8", etag)


@router.get("/branding/{organization_id}/logo", include_in_schema=False)
async def branding_logo(organization_id: str, request: Request, session: DbSessionDep) -> Response:
    row = await logo_of(session, organization_id[:64])
    if row is None or row.logo is None or row.logo_type is None:
        raise NotFound()
    etag = f'"{row.logo_sha256 or hashlib.sha256(row.logo).hexdigest()}"'
    return _cached(request, row.logo, row.logo_type, etag)
