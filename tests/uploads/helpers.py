"""Files a phone would send, and the patient's upload calls, for the uploads tests."""

from __future__ import annotations

import io
from typing import Any

import httpx
from PIL import Image
from pypdf import PdfWriter

GPS_IFD = 0x8825
PDF_MARKER = "Referral for Quorbalax Vintershine"  # text no other test writes

UPLOAD_FIELDS: list[dict[str, Any]] = [
    {"id": "name", "type": "text", "label": "Full name"},
    {"id": "card", "type": "file", "label": "Insurance card", "accept": ["image"]},
    {
        "id": "papers",
        "type": "file",
        "label": "Referral",
        "maxFiles": 2,
        "maxSizeMb": 1,
    },
]


def photo_with_gps(size: tuple[int, int] = (64, 40)) -> bytes:
    image = Image.new("RGB", size, (30, 120, 200))
    for x in range(0, size[0], 4):  # some structure, so the JPEG has a body to find
        image.putpixel((x, x % size[1]), (250, 250, 10))
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (51.0, 30.0, 0.0), 3: "W", 4: (0.0, 7.0, 0.0)})
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif)
    return out.getvalue()


def pdf_document(pages: int = 1, marker: str = PDF_MARKER) -> bytes:
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=200, height=200)
    writer.add_metadata({"/Title": marker})
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


async def upload(
    http: httpx.AsyncClient,
    public_id: str,
    nonce: str,
    field: str,
    data: bytes,
    filename: str = "photo.jpg",
    content_type: str = "image/jpeg",
    base: str = "/api/public/forms",
) -> httpx.Response:
    return await http.post(
        f"{base}/{public_id}/files",
        data={"nonce": nonce, "field": field},
        files={"file": (filename, data, content_type)},
    )
