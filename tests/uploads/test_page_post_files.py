"""A patient page with a file field, posted without JavaScript (multipart/form-data):
each file goes through the upload service and is attached to the response; a refused
file is an error next to its field, the other answers and files kept
(docs/patient-page.md, docs/uploads.md)."""

from __future__ import annotations

import io
from typing import Any

import httpx
from fastapi import FastAPI
from PIL import Image

from healthforms.http.edge import MAX_PAGE_POST_BODY_BYTES
from tests.submissions.drafts.helpers import phone
from tests.submissions.helpers import publish, stored_rows
from tests.submissions.test_html_post import page_nonce
from tests.uploads.helpers import pdf_document, photo_with_gps
from tests.uploads.test_uploads import upload_rows

FIELDS: list[dict[str, Any]] = [
    {"id": "name", "type": "text", "label": "Full name", "required": True},
    {
        "id": "card",
        "type": "file",
        "label": "Insurance card",
        "required": True,
        "accept": ["image"],
    },
    {"id": "papers", "type": "file", "label": "Referral", "maxFiles": 2, "maxSizeMb": 1},
]
HTML = {"accept": "text/html"}

FileParts = list[tuple[str, tuple[str, bytes, str]]]


async def open_page(http: httpx.AsyncClient, public_id: str) -> str:
    reply = await http.get(f"/f/{public_id}", headers=HTML)
    assert reply.status_code == 200, reply.text
    assert 'enctype="multipart/form-data"' in reply.text
    return reply.text


async def post(
    http: httpx.AsyncClient,
    public_id: str,
    nonce: str,
    texts: list[tuple[str, str]],
    files: FileParts,
) -> httpx.Response:
    # An empty file control is sent as a part with an empty name and no bytes.
    return await http.post(
        f"/f/{public_id}",
        data=form_data([("_nonce", nonce), *texts]),
        files=files or [("card", ("", b"", "application/octet-stream"))],
        headers=HTML,
    )


def form_data(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    data: dict[str, list[str]] = {}
    for name, value in pairs:
        data.setdefault(name, []).append(value)
    return data


def big_photo() -> bytes:
    image = Image.effect_noise((900, 900), 100).convert("RGB")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


async def test_a_required_photo_is_sent_without_javascript_and_attached(
    editor_http: httpx.AsyncClient, app: FastAPI
) -> None:
    form = await publish(editor_http, FIELDS)
    public_id = form["publicId"]
    async with phone(app, "198.51.100.41") as http:
        nonce = page_nonce(await open_page(http, public_id))
        sent = await post(
            http,
            public_id,
            nonce,
            [("name", "Ada")],
            [
                ("card", ("jane-card.jpg", photo_with_gps(), "image/jpeg")),
                ("papers", ("letter.pdf", pdf_document(2), "application/pdf")),
                ("papers", ("", b"", "application/octet-stream")),
            ],
        )
        assert sent.status_code == 200, sent.text
        assert 'id="confirmation-code"' in sent.text
    (response,) = await stored_rows(app, form["id"])
    rows = await upload_rows(app, form["id"])
    assert sorted((r.field_id, r.media_type) for r in rows) == [
        ("card", "image/jpeg"),
        ("papers", "application/pdf"),
    ]
    assert all(r.response_id == response.id for r in rows)


async def test_a_refused_file_is_shown_by_its_field_and_the_rest_is_kept(
    editor_http: httpx.AsyncClient, app: FastAPI
) -> None:
    form = await publish(editor_http, FIELDS)
    public_id = form["publicId"]
    async with phone(app, "198.51.100.42") as http:
        nonce = page_nonce(await open_page(http, public_id))
        refused = await post(
            http,
            public_id,
            nonce,
            [("name", "")],
            [
                ("card", ("card.jpg", pdf_document(), "image/jpeg")),
                ("papers", ("letter.pdf", pdf_document(3), "application/pdf")),
            ],
        )
        assert refused.status_code == 422
        page = refused.text
        assert "Must be a photo (JPEG, PNG or WebP)" in page
        assert "Is required" in page  # the name: every error at once
        # The PDF was kept: a ticked box names it, so it is not chosen again.
        (kept,) = await upload_rows(app, form["id"])
        assert kept.field_id == "papers" and kept.response_id is None
        assert f'name="papers" value="{kept.id}" checked' in page
        assert "Keep the PDF document you added" in page
        assert page_nonce(page) == nonce  # validation did not use the nonce

        # Sent again with the box ticked and a photo this time: both attached.
        sent = await post(
            http,
            public_id,
            nonce,
            [("name", "Ada"), ("papers", kept.id)],
            [("card", ("card.png", photo_with_gps(), "image/png"))],
        )
        assert sent.status_code == 200, sent.text
    (response,) = await stored_rows(app, form["id"])
    rows = await upload_rows(app, form["id"])
    assert len(rows) == 2 and all(r.response_id == response.id for r in rows)


async def test_refusals_of_size_count_and_nonce_come_back_on_the_page(
    editor_http: httpx.AsyncClient, app: FastAPI
) -> None:
    form = await publish(editor_http, FIELDS)
    public_id = form["publicId"]
    async with phone(app, "198.51.100.43") as http:
        nonce = page_nonce(await open_page(http, public_id))
        too_big = big_photo()
        assert len(too_big) > 1024 * 1024
        refused = await post(
            http,
            public_id,
            nonce,
            [("name", "Ada")],
            [
                ("card", ("card.jpg", photo_with_gps(), "image/jpeg")),
                ("papers", ("big.png", too_big, "image/png")),
            ],
        )
        assert refused.status_code == 422
        assert "Is too large (at most 1 MB per file)" in refused.text
        three = [("papers", (f"{i}.pdf", pdf_document(), "application/pdf")) for i in range(3)]
        counted = await post(http, public_id, nonce, [("name", "Ada")], three)
        assert counted.status_code == 422
        assert "Takes at most 2 files" in counted.text
        # A forged nonce: nothing is kept, and the page offers a fresh one.
        forged = await post(
            http,
            public_id,
            "nope",
            [("name", "Ada")],
            [("card", ("card.jpg", photo_with_gps(), "image/jpeg"))],
        )
        assert forged.status_code == 400
        assert page_nonce(forged.text) != "nope"
        # Spanish, when the patient reads Spanish.
        spanish = await http.post(
            f"/f/{public_id}",
            data=form_data([("_nonce", nonce), ("name", "Ada")]),
            files=[("card", ("card.jpg", pdf_document(), "image/jpeg"))],
            headers={**HTML, "accept-language": "es"},
        )
        assert spanish.status_code == 422
        assert "Debe ser una foto (JPEG, PNG o WebP)" in spanish.text
    # Only the card photo of the first post was kept (pending); nothing stored.
    assert await stored_rows(app, form["id"]) == []
    assert {r.field_id for r in await upload_rows(app, form["id"])} == {"card"}


async def test_hostile_multipart_page_posts_get_a_clear_4xx(
    editor_http: httpx.AsyncClient, app: FastAPI
) -> None:
    form = await publish(editor_http, FIELDS)
    public_id = form["publicId"]
    url = f"/f/{public_id}"
    async with phone(app, "198.51.100.44") as http:
        nonce = page_nonce(await open_page(http, public_id))
        bodies = [
            ("multipart/form-data", b"--x\r\n"),  # no boundary
            ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data"),
            ("multipart/form-data; boundary=x", b"garbage"),
            ("multipart/form-data; boundary=" + "b" * 300, b""),
        ]
        for content_type, body in bodies:
            reply = await http.post(
                url, content=body, headers={"content-type": content_type, **HTML}
            )
            assert reply.status_code == 400, (content_type, reply.status_code)
            assert "The form could not be read" in reply.text
        # A text control past any this form has, and too many controls: refused.
        long_text = await http.post(
            url,
            data=form_data([("_nonce", nonce), ("name", "x" * 400_000)]),
            files=[("card", ("", b"", "application/octet-stream"))],
            headers=HTML,
        )
        assert long_text.status_code == 400
        many = await http.post(
            url,
            data=form_data([("_nonce", nonce)] + [(f"f{i}", "x") for i in range(500)]),
            files=[("card", ("", b"", "application/octet-stream"))],
            headers=HTML,
        )
        assert many.status_code == 400
        # A file for a control the form does not have is read past, never kept.
        other = await post(
            http,
            public_id,
            nonce,
            [("name", "Ada")],
            [("ghost", ("x.jpg", photo_with_gps(), "image/jpeg"))],
        )
        assert other.status_code == 422 and "Is required" in other.text
        # Past the page's own cap: refused before it is read.
        huge = await http.post(
            url,
            content=b"",
            headers={
                "content-type": "multipart/form-data; boundary=x",
                "content-length": str(MAX_PAGE_POST_BODY_BYTES + 1),
                **HTML,
            },
        )
        assert huge.status_code == 413
    assert await upload_rows(app, form["id"]) == []
