"""Branding (docs/branding.md): an admin's name, colour and logo, audited; the public
stylesheet and logo; the patient page and the PDF showing them; a form's thank-you."""

from __future__ import annotations

import asyncio
import io
import json
import struct
import zlib
from typing import Any, cast

import httpx
import pypdf
import pytest
from PIL import Image
from sqlalchemy import select

from healthforms.audit.models import AuditEventRow
from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from healthforms.forms.validation import MAX_THANK_YOU
from healthforms.security.principal import Role
from tests.patient_requests.helpers import create_request, token_of
from tests.support.response_factory import (
    UNICODE_NAME,
    PublishedForm,
    create_organization,
    create_response,
    evidence,
    intake_answers,
)
from tests.support.response_fixtures import StaffFactory

BRANDING = "/api/organization/branding"
LOGO = "/api/organization/branding/logo"
GPS_IFD = 0x8825
ACCENT = "#5a2ca0"


def png(size: tuple[int, int] = (300, 120), color: tuple[int, int, int] = (15, 98, 114)) -> bytes:
    image = Image.new("RGB", size, color)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def photo_with_gps(size: tuple[int, int] = (2400, 1200)) -> bytes:
    image = Image.new("RGB", size, (200, 30, 30))
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (51.0, 30.0, 0.0), 3: "W", 4: (0.0, 7.0, 0.0)})
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif, comment=b"taken at the clinic")
    return out.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(side: int = 60_000) -> bytes:
    """A few hundred bytes of PNG that declare a canvas of `side` x `side` pixels."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", rows)
        + _chunk(b"IEND", b"")
    )


async def events(db: Database, action: str, organization_id: str) -> list[AuditEventRow]:
    """The events of `action` about one organisation (the database is shared)."""
    async with db.sessions() as session:
        query = select(AuditEventRow).where(
            AuditEventRow.action == action, AuditEventRow.resource_id == organization_id
        )
        return list((await session.execute(query.order_by(AuditEventRow.id))).scalars())


def detail(event: AuditEventRow) -> dict[str, Any]:
    assert event.detail is not None
    parsed: dict[str, Any] = json.loads(event.detail)
    return parsed


async def put_logo(http: httpx.AsyncClient, data: bytes, kind: str = "image/png") -> httpx.Response:
    return await http.put(LOGO, content=data, headers={"Content-Type": kind})


async def test_an_admin_sets_name_and_colour_and_every_change_is_audited(
    db: Database, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    before = (await admin.get(BRANDING)).json()
    assert before["displayName"] is None and before["accentColor"] is None
    assert before["logo"] is None and before["stylesheet"] is None
    assert before["name"]  # the organisation's own name

    reply = await admin.put(
        BRANDING, json={"displayName": "  Sunrise   Family Clinic ", "accentColor": "#5A2CA0"}
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["displayName"] == body["name"] == "Sunrise Family Clinic"
    assert body["accentColor"] == "#5a2ca0"
    org = clinic.organization_id
    assert body["stylesheet"] == f"/branding/{org}.css?v={body['revision']}"
    assert (await admin.get(BRANDING)).json() == body

    (event,) = await events(db, "branding.updated", org)
    assert event.resource_id == org and event.organization_id == org
    assert detail(event) == {"changed": ["displayName", "accentColor"]}
    # The same values again change nothing and record nothing.
    again = await admin.put(BRANDING, json={"displayName": "Sunrise Family Clinic"})
    assert again.json()["revision"] == body["revision"]
    assert len(await events(db, "branding.updated", org)) == 1


async def test_a_colour_white_text_cannot_be_read_on_is_refused_with_the_rule(
    db: Database, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    org = clinic.organization_id
    reply = await admin.put(BRANDING, json={"displayName": "Bright", "accentColor": "#ffcc00"})
    assert reply.status_code == 422
    body = reply.json()
    assert body["code"] == "validation_error"
    message = body["fields"]["accentColor"]
    assert "#ffcc00" in message and "4.5:1" in message and "WCAG AA" in message
    # Nothing of the request was stored (the name neither), nothing recorded.
    assert (await admin.get(BRANDING)).json()["displayName"] is None
    assert await events(db, "branding.updated", org) == []


@pytest.mark.parametrize(
    "body",
    [
        {"accentColor": "teal"},
        {"accentColor": 255},
        {"displayName": "x" * 121},
        {"displayName": "Clinic\u0007"},
        {"displayName": ["a"]},
        {"logoUrl": "https://evil.example/logo.png"},
    ],
)
async def test_bad_settings_get_a_422_naming_them(
    admin: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    reply = await admin.put(BRANDING, json=body)
    assert reply.status_code == 422
    assert set(reply.json()["fields"]) == set(body)


async def test_a_body_that_is_not_an_object_is_a_4xx(admin: httpx.AsyncClient) -> None:
    assert (await admin.put(BRANDING, json=["#000000"])).status_code == 422
    broken = await admin.put(BRANDING, content=b"{", headers={"Content-Type": "application/json"})
    assert broken.status_code == 400


async def test_only_admins_change_it_and_every_member_reads_it(
    clinic: PublishedForm, staff: StaffFactory
) -> None:
    for role in (Role.EDITOR, Role.VIEWER):
        async with staff(clinic.organization_id, role) as http:
            assert (await http.get(BRANDING)).status_code == 200
            assert (await http.put(BRANDING, json={"displayName": "X"})).status_code == 403
            assert (await put_logo(http, png())).status_code == 403
            assert (await http.delete(LOGO)).status_code == 403


async def test_signed_out_reads_are_401(app: Any) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        assert (await http.get(BRANDING)).status_code == 401


async def test_a_photo_logo_loses_its_gps_is_scaled_and_served_with_cache_headers(
    db: Database, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    org = clinic.organization_id
    source = photo_with_gps()
    assert b"PhoneMaker" in source
    reply = await put_logo(admin, source, "image/png")  # the header lies: content decides
    assert reply.status_code == 200, reply.text
    logo = reply.json()["logo"]
    assert logo["type"] == "image/jpeg"
    assert (logo["width"], logo["height"]) == (1000, 500)

    served = await admin.get(logo["url"])
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/jpeg"
    assert served.headers["x-content-type-options"] == "nosniff"
    assert served.headers["cache-control"] == "public, max-age=3600"
    assert b"PhoneMaker" not in served.content and b"taken at the clinic" not in served.content
    with Image.open(io.BytesIO(served.content)) as image:
        assert image.size == (1000, 500)
        assert dict(image.getexif()) == {}
    etag = served.headers["etag"]
    unchanged = await admin.get(logo["url"], headers={"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.content == b""

    (event,) = await events(db, "branding.logo_set", org)
    assert detail(event) == {
        "type": "image/jpeg",
        "width": 1000,
        "height": 500,
        "bytes": len(served.content),
    }


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (png_bomb(), "too large an image"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>", "PNG or JPEG"),
        (b"GIF89a" + b"\x00" * 64, "PNG or JPEG"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "PNG or JPEG"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "damaged"),
        (b"", "empty"),
    ],
)
async def test_a_logo_that_is_not_a_safe_png_or_jpeg_is_refused(
    db: Database, clinic: PublishedForm, admin: httpx.AsyncClient, data: bytes, reason: str
) -> None:
    org = clinic.organization_id
    reply = await put_logo(admin, data)
    assert reply.status_code == 422
    body = reply.json()
    assert body["code"] == "logo_refused"
    assert reason in body["fields"]["logo"]
    assert (await admin.get(BRANDING)).json()["logo"] is None
    assert await events(db, "branding.logo_set", org) == []


async def test_a_logo_over_a_megabyte_is_refused(admin: httpx.AsyncClient) -> None:
    noise = png() + b"\x00" * (1024 * 1024)
    reply = await put_logo(admin, noise)
    assert reply.status_code in (413, 422)
    assert (await admin.get(BRANDING)).json()["logo"] is None


async def test_removing_the_logo_stops_serving_it(
    db: Database, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    org = clinic.organization_id
    url = (await put_logo(admin, png())).json()["logo"]["url"]
    assert (await admin.get(url)).status_code == 200
    reply = await admin.delete(LOGO)
    assert reply.status_code == 200 and reply.json()["logo"] is None
    assert (await admin.get(url)).status_code == 404
    assert len(await events(db, "branding.logo_removed", org)) == 1
    # Nothing to remove: nothing recorded.
    assert (await admin.delete(LOGO)).status_code == 200
    assert len(await events(db, "branding.logo_removed", org)) == 1


async def test_the_stylesheet_carries_the_accent_and_revalidates(
    clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    url = f"/branding/{clinic.organization_id}.css"
    assert (await admin.get(url)).status_code == 404  # no accent chosen
    await admin.put(BRANDING, json={"accentColor": "#5a2ca0"})
    sheet = await admin.get(url)
    assert sheet.status_code == 200
    assert sheet.headers["content-type"] == "text/css; charset=utf-8"
    assert "--primary: #5a2ca0;" in sheet.text
    assert sheet.headers["cache-control"] == "public, max-age=3600"
    again = await admin.get(url, headers={"If-None-Match": sheet.headers["etag"]})
    assert again.status_code == 304
    assert (await admin.get("/branding/org_unknown.css")).status_code == 404
    assert (await admin.get("/branding/org_unknown/logo")).status_code == 404


async def test_another_clinic_s_branding_is_its_own(
    db: Database, clinic: PublishedForm, admin: httpx.AsyncClient, staff: StaffFactory
) -> None:
    await admin.put(BRANDING, json={"displayName": "Sunrise", "accentColor": "#5a2ca0"})
    other = await create_organization(db)
    async with staff(other, Role.ADMIN) as theirs:
        assert (await theirs.get(BRANDING)).json()["displayName"] is None
        await theirs.put(BRANDING, json={"displayName": "Moonrise"})
    assert (await admin.get(BRANDING)).json()["displayName"] == "Sunrise"


async def publish_with_thank_you(
    http: httpx.AsyncClient, form_id: str, message: str | None
) -> dict[str, Any]:
    form = (await http.get(f"/api/forms/{form_id}")).json()
    saved = await http.put(
        f"/api/forms/{form_id}",
        json={"thankYouMessage": message, "revision": form["revision"]},
    )
    assert saved.status_code == 200, saved.text
    published = await http.post(f"/api/forms/{form_id}/publish")
    assert published.status_code == 200, published.text
    body: dict[str, Any] = published.json()
    return body


async def test_the_patient_page_shows_logo_name_colour_and_thank_you(
    clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    await admin.put(
        BRANDING, json={"displayName": "Sunrise Family Clinic", "accentColor": "#5a2ca0"}
    )
    branding = (await put_logo(admin, png())).json()
    form = await publish_with_thank_you(
        admin, clinic.form_id, "We will call you within 2 days.\n<b>Bring your card</b>."
    )
    assert form["thankYouMessage"] == "We will call you within 2 days.\n<b>Bring your card</b>."

    page = await admin.get(f"/f/{form['publicId']}", headers={"Accept": "text/html"})
    assert page.status_code == 200
    html = page.text
    assert f'<link rel="stylesheet" href="{branding["stylesheet"]}">' in html
    assert f'src="{branding["logo"]["url"]}"' in html
    assert '<span class="clinic-name">Sunrise Family Clinic</span>' in html
    # Plain text: escaped, never markup.
    assert "&lt;b&gt;Bring your card&lt;/b&gt;" in html and "<b>Bring" not in html
    assert 'id="thank-you-message"' in html


async def test_the_thank_you_message_is_checked(
    clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    url = f"/api/forms/{clinic.form_id}"
    for bad in ("x" * (MAX_THANK_YOU + 1), 12, "bell\u0007"):
        reply = await admin.put(url, json={"thankYouMessage": bad})
        assert reply.status_code == 422
        assert "thankYouMessage" in reply.json()["fields"]
    created = await admin.post("/api/forms", json={"title": "T", "thankYouMessage": "  Thanks!  "})
    assert created.json()["thankYouMessage"] == "Thanks!"
    # Blank is the default text.
    cleared = await admin.put(f"/api/forms/{created.json()['id']}", json={"thankYouMessage": " "})
    assert cleared.json()["thankYouMessage"] is None


async def test_the_pdf_prints_the_logo_and_the_display_name(
    db: Database, keys: KeyRing, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    await admin.put(BRANDING, json={"displayName": "Sunrise Family Clinic"})
    await put_logo(admin, png((400, 100), (200, 40, 40)))
    answers = intake_answers()
    response_id = await create_response(db, keys, clinic, answers, evidence(answers))

    reply = await admin.post(f"/api/responses/{response_id}/generate-pdf")
    assert reply.status_code == 200
    reader = pypdf.PdfReader(io.BytesIO(reply.content))
    first = reader.pages[0]
    text = first.extract_text()
    assert "Sunrise Family Clinic" in text and UNICODE_NAME in "\n".join(
        p.extract_text() for p in reader.pages
    )
    xobjects = cast(pypdf.generic.DictionaryObject, first["/Resources"])["/XObject"]
    objects = cast(pypdf.generic.DictionaryObject, xobjects.get_object())
    sizes = []
    for name in objects:
        obj = cast(pypdf.generic.DictionaryObject, objects[name].get_object())
        if str(obj["/Subtype"]) == "/Image":
            sizes.append((int(cast(int, obj["/Width"])), int(cast(int, obj["/Height"]))))
    assert (400, 100) in sizes  # the logo, beside the name on page 1


async def test_concurrent_first_saves_all_land_and_each_gets_its_own_revision(
    db: Database, staff: StaffFactory
) -> None:
    org = await create_organization(db)
    colours = ["#5a2ca0", "#0f6272", "#b00020", "#1d4ed8", "#166534", "#7c2d12"]
    async with staff(org, Role.ADMIN) as first, staff(org, Role.ADMIN) as second:
        clients = [first, second] * 3
        replies = await asyncio.gather(
            *(
                http.put(BRANDING, json={"accentColor": colour})
                for http, colour in zip(clients, colours, strict=True)
            )
        )
        assert [r.status_code for r in replies] == [200] * len(colours), [r.text for r in replies]
        final = (await first.get(BRANDING)).json()
    assert final["revision"] == len(colours)
    assert final["accentColor"] in colours
    assert len(await events(db, "branding.updated", org)) == len(colours)


async def test_a_patient_s_personal_link_shows_the_clinic_s_branding(
    clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    await admin.put(BRANDING, json={"displayName": "Sunrise Family Clinic", "accentColor": ACCENT})
    branding = (await put_logo(admin, png())).json()
    form = await publish_with_thank_you(admin, clinic.form_id, "See you soon.")
    created = await create_request(admin, form["id"])
    page = await admin.get(f"/r/{token_of(created['link'])}", headers={"Accept": "text/html"})
    assert page.status_code == 200
    html = page.text
    assert f'<link rel="stylesheet" href="{branding["stylesheet"]}">' in html
    assert f'src="{branding["logo"]["url"]}"' in html
    assert "Your form from Sunrise Family Clinic" in html
    assert "See you soon." in html
