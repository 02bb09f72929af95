"""The patient page posted as plain HTML (no JavaScript): the JSON API's submission,
nonce, validation and exactly-once storage, answered with pages."""

from __future__ import annotations

import asyncio
import base64
import html
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image

from healthforms.app import create_app
from healthforms.forms.schema import FieldDef, fields_from_json
from healthforms.security.principal import Role
from healthforms.submissions.html_form import posted_answers, typed_signature
from healthforms.submissions.validation import (
    SIGNATURE_PREFIX,
    client_rules,
    validate_answers,
)
from tests.forms.helpers import GENEROUS_RATE, StaffDirectory, feature_settings, signed_in
from tests.submissions.helpers import count_rows, open_payload, publish, stored_rows

NONCE_RE = re.compile(r'name="_nonce" id="form-nonce" value="([^"]+)"')
CODE_RE = re.compile(r'id="confirmation-code">([A-Z2-9]{10})<')
FORM = {"content-type": "application/x-www-form-urlencoded", "accept": "text/html"}

ALL_FIELDS: list[dict[str, Any]] = [
    {"id": "name", "type": "text", "label": "Full name", "required": True, "max": 100},
    {"id": "notes", "type": "textarea", "label": "Notes"},
    {"id": "email", "type": "email", "label": "Email", "required": True},
    {"id": "phone", "type": "phone", "label": "Phone"},
    {"id": "age", "type": "number", "label": "Age", "min": 0, "max": 130},
    {"id": "weight", "type": "number", "label": "Weight"},
    {"id": "dob", "type": "date", "label": "Date of birth"},
    {"id": "sex", "type": "select", "label": "Sex", "options": ["F", "M", "X"]},
    {"id": "smoker", "type": "radio", "label": "Smoker", "options": ["yes", "no"]},
    {
        "id": "packs",
        "type": "number",
        "label": "Packs a day",
        "required": True,
        "showWhen": {"field": "smoker", "equals": "yes"},
    },
    {"id": "allergies", "type": "checkbox", "label": "Allergies", "options": ["nuts", "dust"]},
    {"id": "consent", "type": "checkbox", "label": "I consent", "required": True},
    {"id": "sig", "type": "signature", "label": "Signature", "required": True},
]

GOOD: list[tuple[str, str]] = [
    ("name", "  Ada Patient "),
    ("notes", "line one\r\nline two"),
    ("email", "ada@example.org"),
    ("phone", "+1 555 010 2030"),
    ("age", "42"),
    ("weight", "71.5"),
    ("dob", "1980-02-29"),
    ("sex", "F"),
    ("smoker", "no"),
    ("packs", "12"),  # hidden by its condition: ignored, as the API ignores it
    ("allergies", "nuts"),
    ("allergies", "dust"),
    ("consent", "true"),
    ("sig", ""),
    ("sig:typed", "Ada Patient"),
]


def page_nonce(page: str) -> str:
    found = NONCE_RE.search(page)
    assert found, "no nonce in the page"
    return html.unescape(found.group(1))


def with_value(pairs: list[tuple[str, str]], name: str, value: str) -> list[tuple[str, str]]:
    return [(k, value if k == name else v) for k, v in pairs]


async def open_page(client: httpx.AsyncClient, public_id: str) -> str:
    reply = await client.get(f"/f/{public_id}", headers={"accept": "text/html"})
    assert reply.status_code == 200, reply.text
    assert reply.headers["cache-control"] == "no-store"
    assert f'action="/f/{public_id}"' in reply.text
    return reply.text


async def post(
    client: httpx.AsyncClient, public_id: str, nonce: str, pairs: list[tuple[str, str]]
) -> httpx.Response:
    return await client.post(
        f"/f/{public_id}", content=_encode([("_nonce", nonce), *pairs]), headers=FORM
    )


def _encode(pairs: list[tuple[str, str]]) -> bytes:
    return urlencode(pairs).encode()


async def test_a_plain_post_stores_typed_answers_like_the_api(
    editor_http: httpx.AsyncClient, client: httpx.AsyncClient, app: FastAPI
) -> None:
    form = await publish(editor_http, ALL_FIELDS)
    page = await open_page(client, form["publicId"])
    sent = await post(client, form["publicId"], page_nonce(page), GOOD)
    assert sent.status_code == 200, sent.text
    assert sent.headers["cache-control"] == "no-store"
    assert "Ada Patient" not in sent.text  # the confirmation page holds no answer
    code = CODE_RE.search(sent.text)
    assert code is not None
    (row,) = await stored_rows(app, form["id"])
    assert row.confirmation == code.group(1)
    answers = open_payload(app, row)["answers"]
    signature = answers.pop("sig")
    assert answers == {
        "name": "Ada Patient",
        "notes": "line one\nline two",
        "email": "ada@example.org",
        "phone": "+1 555 010 2030",
        "age": 42,
        "weight": 71.5,
        "dob": "1980-02-29",
        "sex": "F",
        "smoker": "no",
        "allergies": ["nuts", "dust"],
        "consent": True,
    }
    # The typed name, drawn into a PNG the size of the pad's canvas.
    assert signature.startswith(SIGNATURE_PREFIX)
    image = Image.open(io.BytesIO(base64.b64decode(signature[len(SIGNATURE_PREFIX) :])))
    assert image.format == "PNG" and image.size == (600, 200)
    darkest = image.convert("L").getextrema()[0]
    assert isinstance(darkest, int) and darkest < 100  # ink on the white


async def test_a_refused_answer_comes_back_next_to_its_field_with_the_others_kept(
    editor_http: httpx.AsyncClient, client: httpx.AsyncClient, app: FastAPI
) -> None:
    form = await publish(editor_http, ALL_FIELDS)
    nonce = page_nonce(await open_page(client, form["publicId"]))
    bad = with_value(with_value(GOOD, "email", "not-an-email"), "age", "200")
    refused = await post(client, form["publicId"], nonce, bad)
    assert refused.status_code == 422
    page = refused.text
    # Each error next to its field (described by it) and in the summary (role=alert).
    assert re.search(r'id="q-email-error">Must be an email address</p>', page)
    assert re.search(r'id="q-age-error">Must be at most 130</p>', page)
    assert 'aria-invalid="true"' in page
    assert 'role="alert" tabindex="-1" autofocus' in page
    assert "Email: must be an email address" in page
    # The answers stay in their controls; the nonce was not used, so it is the same.
    assert 'value="not-an-email"' in page and 'value="Ada Patient"' in page
    assert 'value="F" selected' in page and 'value="no" checked' in page
    assert 'value="nuts" checked' in page and 'value="dust" checked' in page
    assert re.search(r'name="consent" value="true"[^>]*checked', page)
    assert 'value="Ada Patient"' in page.split('name="sig:typed"')[1][:200]
    assert ">\nline one\nline two</textarea>" in page
    assert page_nonce(page) == nonce
    assert await count_rows(app, form["id"]) == 0
    fixed = await post(client, form["publicId"], nonce, GOOD)
    assert fixed.status_code == 200 and CODE_RE.search(fixed.text)
    assert await count_rows(app, form["id"]) == 1


async def test_the_same_post_twice_stores_once_and_shows_the_same_code(
    editor_http: httpx.AsyncClient, client: httpx.AsyncClient, app: FastAPI
) -> None:
    form = await publish(editor_http, ALL_FIELDS)
    nonce = page_nonce(await open_page(client, form["publicId"]))
    # A double tap: both at once, then a third after (Back and Send again).
    first, second = await asyncio.gather(
        post(client, form["publicId"], nonce, GOOD), post(client, form["publicId"], nonce, GOOD)
    )
    codes = set()
    for reply in (first, second):
        if reply.status_code == 409:  # the other copy was being stored that moment
            assert "being stored" in reply.text
            continue
        assert reply.status_code == 200, reply.text
        codes.add(CODE_RE.search(reply.text).group(1))  # type: ignore[union-attr]
    third = await post(client, form["publicId"], nonce, GOOD)
    assert third.status_code == 200
    codes.add(CODE_RE.search(third.text).group(1))  # type: ignore[union-attr]
    assert len(codes) == 1
    assert await count_rows(app, form["id"]) == 1
    # Other answers with a used nonce: refused, nothing stored, the answers kept.
    other = await post(client, form["publicId"], nonce, with_value(GOOD, "sex", "M"))
    assert other.status_code == 409
    assert "already sent" in other.text and 'value="M" selected' in other.text
    assert f'href="/f/{form["publicId"]}">Fill in a new response' in other.text
    assert await count_rows(app, form["id"]) == 1


async def test_a_missing_or_forged_nonce_stores_nothing_and_offers_a_fresh_one(
    editor_http: httpx.AsyncClient, client: httpx.AsyncClient, app: FastAPI
) -> None:
    form = await publish(editor_http, ALL_FIELDS)
    for nonce in ("", "forged.1700000000.abc", "x" * 5000):
        reply = await post(client, form["publicId"], nonce, GOOD)
        assert reply.status_code == 400, reply.text
        assert "Your answers are kept" in reply.text and 'value="Ada Patient"' in reply.text
        fresh = page_nonce(reply.text)
        assert fresh and fresh != nonce
    # Not a form body at all: a page, never a 500.
    for body, kind in ((b"{}", "application/json"), (b"\xff\xfe", "text/plain")):
        odd = await client.post(
            f"/f/{form['publicId']}", content=body, headers={"content-type": kind}
        )
        assert odd.status_code == 400
    broken = await client.post(
        f"/f/{form['publicId']}",
        content=b"--x\r\nbroken",
        headers={"content-type": "multipart/form-data; boundary=x", "accept": "text/html"},
    )
    assert broken.status_code == 400
    assert await count_rows(app, form["id"]) == 0
    # Unknown links: the page's 404.
    missing = await client.post("/f/no-such-form", content=b"_nonce=x", headers=FORM)
    assert missing.status_code == 404 and "This form link is not valid." in missing.text


async def test_too_many_fields_is_refused_before_parsing_them_all(
    editor_http: httpx.AsyncClient, client: httpx.AsyncClient, app: FastAPI
) -> None:
    form = await publish(editor_http, ALL_FIELDS)
    nonce = page_nonce(await open_page(client, form["publicId"]))
    flood = [("x", "1")] * 5000
    reply = await post(client, form["publicId"], nonce, [*GOOD, *flood])
    assert reply.status_code == 400
    assert await count_rows(app, form["id"]) == 0


async def test_a_staff_cookie_neither_opens_nor_blocks_the_patient_post(
    app: FastAPI, staff_directory: StaffDirectory, editor_http: httpx.AsyncClient
) -> None:
    """The session layer skips /f/: no CSRF token is asked for (the nonce protects the
    POST), and a session gives nothing: without a nonce nothing is stored."""
    form = await publish(editor_http, ALL_FIELDS)
    editor = await staff_directory.user(Role.EDITOR)
    async with signed_in(app, staff_directory, editor) as staff:
        page = (await staff.get(f"/f/{form['publicId']}")).text
        without = await staff.post(f"/f/{form['publicId']}", content=_encode(GOOD), headers=FORM)
        assert without.status_code == 400
        sent = await staff.post(
            f"/f/{form['publicId']}",
            content=_encode([("_nonce", page_nonce(page)), *GOOD]),
            headers={**FORM, "origin": "https://elsewhere.example"},
        )
        assert sent.status_code == 200
    assert await count_rows(app, form["id"]) == 1


@pytest.fixture
async def tight_app(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> AsyncIterator[FastAPI]:
    settings = feature_settings(
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix + "tight:",
        data_dir=tmp_path / "tight",
        rate_limit_public="1/min+1",
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


async def test_the_post_spends_the_public_rate_limit(tight_app: FastAPI) -> None:
    directory = StaffDirectory(tight_app)
    editor = await directory.user(Role.EDITOR)
    async with signed_in(tight_app, directory, editor) as staff:
        form = await publish(staff, ALL_FIELDS)
    transport = httpx.ASGITransport(app=tight_app, client=("198.51.100.23", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as phone:
        page = await phone.get(f"/f/{form['publicId']}")
        nonce = page_nonce(page.text)
        statuses = []
        for _ in range(3):
            reply = await post(phone, form["publicId"], nonce, with_value(GOOD, "email", "bad"))
            statuses.append(reply.status_code)
        assert statuses == [422, 422, 429]
        # Over the limit: the form itself, its answers kept, with the wait and headers.
        assert "Too many attempts from this connection" in reply.text
        assert 'value="Ada Patient"' in reply.text and page_nonce(reply.text) == nonce
        assert int(reply.headers["retry-after"]) >= 1
        assert "ratelimit-policy" in {k.lower() for k in reply.headers}
        # Valid answers over the limit: refused with the claim given back, nothing stored.
        valid = await post(phone, form["publicId"], nonce, GOOD)
        assert valid.status_code == 429 and 'value="Ada Patient"' in valid.text
        assert await count_rows(tight_app, form["id"]) == 0
        # The JSON API's submissions are refused by the layer as before, in JSON.
        api = await phone.post(
            f"/api/public/forms/{form['publicId']}/responses",
            json={"nonce": nonce, "answers": {}},
        )
        assert api.status_code == 429 and api.json()["code"] == "rate_limited"
    assert GENEROUS_RATE != "1/min+1"


# The mapping and the rules, without HTTP ---------------------------------------------


def _fields(raw: list[dict[str, Any]]) -> list[FieldDef]:
    return fields_from_json(raw)


def _posted(fields: list[FieldDef], pairs: list[tuple[str, str]]) -> dict[str, Any]:
    def one(name: str) -> str | None:
        return next((v for k, v in pairs if k == name), None)

    def every(name: str) -> list[str]:
        return [v for k, v in pairs if k == name]

    return posted_answers(fields, one, every).answers


@pytest.mark.parametrize(
    ("field", "pairs", "expected"),
    [
        ({"type": "number"}, [("f", "1e3")], 1000),
        ({"type": "number"}, [("f", "-.5")], -0.5),
        ({"type": "number"}, [("f", "12abc")], "12abc"),
        ({"type": "number"}, [("f", "1_000")], "1_000"),  # Python's float() would take it
        ({"type": "number"}, [("f", "1e999")], "1e999"),
        ({"type": "number"}, [("f", "   ")], None),
        ({"type": "checkbox"}, [], False),
        ({"type": "checkbox"}, [("f", "true")], True),
        ({"type": "checkbox"}, [("f", "yes")], "yes"),
        ({"type": "checkbox", "options": ["a", "b"]}, [], None),
        ({"type": "checkbox", "options": ["a", "b"]}, [("f", "b"), ("f", "z")], ["b", "z"]),
        ({"type": "radio", "options": [" a "]}, [("f", " a ")], " a "),
        ({"type": "select", "options": ["a"]}, [("f", "")], None),
        ({"type": "textarea"}, [("f", "  a\r\nb  ")], "  a\nb  "),
        ({"type": "text"}, [("f", "  a  ")], "a"),
        ({"type": "signature"}, [("f", "data:x")], "data:x"),
        ({"type": "signature"}, [("f", ""), ("f:typed", "  ")], None),
    ],
)
def test_posted_controls_are_typed_as_the_pages_script_types_them(
    field: dict[str, Any], pairs: list[tuple[str, str]], expected: object
) -> None:
    fields = _fields([{"id": "f", "label": "F", **field}])
    assert _posted(fields, pairs).get("f") == expected


def test_a_typed_signature_passes_the_signature_rules_however_long_the_name() -> None:
    fields = _fields([{"id": "sig", "type": "signature", "label": "Sign", "required": True}])
    for name in ("Ada", "Ñandú Øster-Łukasz 山田", "W" * 500):
        answers = _posted(fields, [("sig:typed", name)])
        assert validate_answers(fields, answers)["sig"] == answers["sig"]
    assert typed_signature("Ada") == typed_signature("Ada")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ({"type": "text", "max": 3}, "abcd"),
        ({"type": "text", "min": 3}, "ab"),
        ({"type": "textarea"}, "x" * 10_001),
        ({"type": "text", "pattern": "[0-9]+"}, "abc"),
        ({"type": "email"}, "abc"),
        ({"type": "phone"}, "abc"),
        ({"type": "number"}, "abc"),
        ({"type": "number"}, 1e16),
        ({"type": "number", "min": 0.5}, 0),
        ({"type": "number", "max": 1234567}, 1234568),
        ({"type": "date"}, "2023-02-29"),
    ],
)
def test_the_page_gets_the_validators_own_message_for_each_rule(
    field: dict[str, Any], value: object
) -> None:
    """client_rules carries exactly the message the validator answers with."""
    (definition,) = _fields([{"id": "f", "label": "F", **field}])
    rules = client_rules(definition)
    try:
        validate_answers([definition], {"f": value})
    except Exception as exc:  # noqa: BLE001 - ValidationFailed, read below
        message = exc.extra["fields"]["f"]  # type: ignore[attr-defined]
    else:
        pytest.fail("the validator accepted it")
    carried = [r["message"] if isinstance(r, dict) else r for r in rules.values()]
    assert message in carried, (message, rules)
