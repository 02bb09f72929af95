"""An organisation's branding: what an admin sets, what patient pages and PDFs show.

The display name, accent colour and logo are not PHI: stored in the clear, served to
anyone who has a form link (the stylesheet and the logo are public URLs under
`/branding/`). The logo is never kept as uploaded: `images.clean_image` decodes it
within a pixel budget (a decompression bomb is refused before it is drawn), scales it to
MAX_LOGO_SIDE and re-encodes it, which drops EXIF (a phone photo's GPS position) and
every other piece of metadata.

Patient pages read the branding through a short per-process cache (BRANDING_TTL_S):
a page view stays free of database reads, as for the published form itself; a change
reaches every instance within that time, and this one at once.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.branding.colors import AccentShades, parse_hex, shades, validate_accent
from healthforms.branding.models import OrganizationBranding
from healthforms.clock import rfc3339, utcnow
from healthforms.errors import HealthformsError, ValidationFailed
from healthforms.identity.models import Organization
from healthforms.images import JPEG, PNG, UnsafeFile, clean_image, sniff

MAX_DISPLAY_NAME = 120
MAX_LOGO_BYTES = 1024 * 1024
MAX_LOGO_SIDE = 1000
# A logo is small: a canvas beyond this many pixels is refused before it is decoded.
MAX_LOGO_PIXELS = 25_000_000
BRANDING_TTL_S = 30.0
_CACHE_LIMIT = 2048


class LogoRefused(HealthformsError):
    """422 naming `logo`: not a PNG or JPEG, damaged, too large or a bomb."""

    status_code, code, message = 422, "logo_refused", "The logo could not be used."

    def __init__(self, reason: str) -> None:
        super().__init__(f"The logo {reason}.", extra={"fields": {"logo": f"The logo {reason}."}})


@dataclass(frozen=True, slots=True)
class Branding:
    """What patients see of an organisation (names and URLs, ready for a template)."""

    organization_id: str
    name: str  # the display name, else the organisation's own name
    display_name: str | None
    accent: AccentShades | None
    logo_type: str | None
    logo_width: int | None
    logo_height: int | None
    revision: int

    @property
    def stylesheet_url(self) -> str | None:
        if self.accent is None:
            return None
        return f"/branding/{self.organization_id}.css?v={self.revision}"

    @property
    def logo_url(self) -> str | None:
        if self.logo_type is None:
            return None
        return f"/branding/{self.organization_id}/logo?v={self.revision}"


def _branding(organization: Organization, row: OrganizationBranding | None) -> Branding:
    rgb = parse_hex(row.accent_color) if row is not None and row.accent_color else None
    return Branding(
        organization_id=organization.id,
        name=(row.display_name if row is not None and row.display_name else organization.name),
        display_name=row.display_name if row is not None else None,
        accent=shades(rgb) if rgb is not None else None,
        logo_type=row.logo_type if row is not None and row.logo is not None else None,
        logo_width=row.logo_width if row is not None else None,
        logo_height=row.logo_height if row is not None else None,
        revision=row.revision if row is not None else 0,
    )


def branding_json(branding: Branding, updated_at: str | None = None) -> dict[str, Any]:
    """The API's Branding object (docs/branding.md)."""
    logo = None
    if branding.logo_url is not None:
        logo = {
            "url": branding.logo_url,
            "type": branding.logo_type,
            "width": branding.logo_width,
            "height": branding.logo_height,
        }
    return {
        "displayName": branding.display_name,
        "name": branding.name,
        "accentColor": branding.accent.primary if branding.accent else None,
        "logo": logo,
        "stylesheet": branding.stylesheet_url,
        "revision": branding.revision,
        "updatedAt": updated_at,
    }


def validate_display_name(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value.strip()) > MAX_DISPLAY_NAME:
        raise ValidationFailed(
            {"displayName": f"Enter a name of at most {MAX_DISPLAY_NAME} characters."}
        )
    text = " ".join(value.split())  # no newlines or control spacing in a page header
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in text):
        raise ValidationFailed({"displayName": "The name may not hold control characters."})
    return text or None


@dataclass(frozen=True, slots=True)
class CleanLogo:
    data: bytes
    media_type: str
    width: int
    height: int


def clean_logo(data: bytes) -> CleanLogo:
    """An uploaded logo re-encoded without any metadata and at most MAX_LOGO_SIDE pixels
    a side; LogoRefused otherwise. CPU-bound: callers run it off the event loop."""
    if not data:
        raise LogoRefused("is empty: choose a PNG or JPEG file")
    if len(data) > MAX_LOGO_BYTES:
        raise LogoRefused("is larger than 1 MB")
    if sniff(data) not in (PNG, JPEG):
        raise LogoRefused("must be a PNG or JPEG image")
    try:
        clean = clean_image(data, max_pixels=MAX_LOGO_PIXELS, max_side=MAX_LOGO_SIDE)
    except UnsafeFile as exc:
        raise LogoRefused(str(exc)) from None
    assert clean.width is not None and clean.height is not None  # noqa: S101 - images set both
    return CleanLogo(clean.data, clean.media_type, clean.width, clean.height)


class BrandingCache:
    """Per-process branding by organisation id, each entry kept BRANDING_TTL_S."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, Branding]] = {}

    def get(self, organization_id: str) -> Branding | None:
        entry = self._entries.get(organization_id)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, branding: Branding) -> None:
        if len(self._entries) >= _CACHE_LIMIT:
            self._entries.clear()
        self._entries[branding.organization_id] = (time.monotonic() + BRANDING_TTL_S, branding)

    def forget(self, organization_id: str) -> None:
        self._entries.pop(organization_id, None)


# One per process: patient pages of every app in it read through it; writes forget.
CACHE = BrandingCache()


async def _row(session: AsyncSession, organization_id: str) -> OrganizationBranding | None:
    return await session.get(OrganizationBranding, organization_id)


async def load_branding(session: AsyncSession, organization_id: str) -> Branding | None:
    """The organisation's branding (defaults when none is set); None for no such
    organisation."""
    organization = await session.get(Organization, organization_id)
    if organization is None:
        return None
    return _branding(organization, await _row(session, organization_id))


async def patient_branding(session: AsyncSession, organization_id: str) -> Branding | None:
    """`load_branding` through the per-process cache (patient pages, PDFs)."""
    cached = CACHE.get(organization_id)
    if cached is not None:
        return cached
    branding = await load_branding(session, organization_id)
    if branding is not None:
        CACHE.put(branding)
    return branding


async def logo_of(session: AsyncSession, organization_id: str) -> OrganizationBranding | None:
    """The branding row when it holds a logo (the logo endpoint, the PDF)."""
    query = select(OrganizationBranding).where(
        OrganizationBranding.organization_id == organization_id,
        OrganizationBranding.logo.is_not(None),
    )
    return (await session.execute(query)).scalar_one_or_none()


class BrandingService:
    """An admin's changes to their own organisation's branding."""

    def __init__(self, session: AsyncSession, organization_id: str) -> None:
        self.session = session
        self.organization_id = organization_id

    async def current(self) -> tuple[Branding, OrganizationBranding | None]:
        organization = await self.session.get(Organization, self.organization_id)
        if organization is None:  # the principal's own organisation: always there
            raise ValidationFailed({"organization": "Unknown organisation."})
        row = await _row(self.session, self.organization_id)
        return _branding(organization, row), row

    async def _writable(self) -> OrganizationBranding:
        row = await _row(self.session, self.organization_id)
        if row is None:
            row = OrganizationBranding(organization_id=self.organization_id, revision=1)
            self.session.add(row)
        else:
            # Counted by the database: two concurrent saves make two revisions, so the
            # second change never hides behind a URL a browser cached for the first.
            row.revision = OrganizationBranding.revision + 1
        row.updated_at = utcnow()
        return row

    async def update(self, body: dict[str, Any]) -> list[str]:
        """Apply the keys `body` holds (displayName, accentColor); return the changed
        ones. Validates everything before writing anything."""
        known = {"displayName", "accentColor"}
        unknown = sorted(set(body) - known)
        if unknown:
            raise ValidationFailed({key: "Not a branding setting." for key in unknown[:10]})
        values: dict[str, str | None] = {}
        if "displayName" in body:
            values["display_name"] = validate_display_name(body["displayName"])
        if "accentColor" in body:
            values["accent_color"] = validate_accent(body["accentColor"])
        existing = await _row(self.session, self.organization_id)
        changed = [
            key
            for key, column in (("displayName", "display_name"), ("accentColor", "accent_color"))
            if column in values and getattr(existing, column, None) != values[column]
        ]
        if changed:
            row = await self._writable()
            for column, value in values.items():
                setattr(row, column, value)
        return changed

    async def set_logo(self, logo: CleanLogo) -> None:
        """Store a logo `clean_logo` made."""
        row = await self._writable()
        row.logo, row.logo_type = logo.data, logo.media_type
        row.logo_width, row.logo_height = logo.width, logo.height
        row.logo_sha256 = hashlib.sha256(logo.data).hexdigest()

    async def remove_logo(self) -> bool:
        row = await _row(self.session, self.organization_id)
        if row is None or row.logo is None:
            return False
        row = await self._writable()
        row.logo = row.logo_type = row.logo_sha256 = None
        row.logo_width = row.logo_height = None
        return True


def updated_at_of(row: OrganizationBranding | None) -> str | None:
    return rfc3339(row.updated_at) if row is not None else None
