"""The answers of one response are capped in total (HEALTHFORMS_MAX_ANSWERS_BYTES): every
byte stored is paid for again when it is printed (~12 s of CPU per MiB, pdf/render.py)."""

from __future__ import annotations

import base64
import io
import random
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image

from healthforms.submissions.validation import (
    DEFAULT_MAX_ANSWERS_BYTES,
    MAX_SIGNATURE_CHARS,
    answers_size,
)
from tests.forms.helpers import GENEROUS_RATE
from tests.submissions.helpers import count_rows, fetch_nonce, publish, submit
from tests.support.identity import GENEROUS_AUTH_RATE

NOTES = 60
LONG_FORM: list[dict[str, Any]] = [
    {"id": "name", "type": "text", "label": "Full name", "required": True},
    *({"id": f"note{i}", "type": "textarea", "label": f"Question {i + 1}"} for i in range(NOTES)),
    {"id": "sig", "type": "signature", "label": "Signature"},
]
MARKER = "Zoë-history-"


def largest_signature() -> str:
    """A real PNG data URL just under the 256 KiB a signature may have (noise does not
    compress)."""
    rng = random.Random(12)  # noqa: S311 - test data, not a secret
    side, previous = 200, ""
    while True:
        pixels = rng.randbytes(side * side * 4)
        image = Image.frombytes("RGBA", (side, side), pixels)
        out = io.BytesIO()
        image.save(out, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(out.getvalue()).decode("ascii")
        if len(url) > MAX_SIGNATURE_CHARS:
            return previous
        previous, side = url, side + 2


def long_answers(notes: int, length: int, **extra: Any) -> dict[str, Any]:
    text = (MARKER + "Lorem ipsum dolor sit amet. " * (length // 28 + 1))[:length]
    return {"name": "Ada Patient", **{f"note{i}": text for i in range(notes)}, **extra}


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {
        "rate_limit_auth": GENEROUS_AUTH_RATE,
        "rate_limit_api": GENEROUS_RATE,
        "rate_limit_public": GENEROUS_RATE,
    }


async def test_answers_over_the_total_cap_are_refused_and_nothing_is_stored(
    app: FastAPI, editor_http: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    form = await publish(editor_http, LONG_FORM)
    nonce = await fetch_nonce(client, form["publicId"])
    # Every answer passes on its own (10,000 characters each), 600 KB together.
    answers = long_answers(NOTES, 10_000)
    assert answers_size(answers) > DEFAULT_MAX_ANSWERS_BYTES

    refused = await submit(client, form["publicId"], nonce, answers)

    assert refused.status_code == 422
    body = refused.json()
    assert body["code"] == "validation_error"
    assert set(body["fields"]) == {"answers"}
    assert "512 KiB" in body["fields"]["answers"]
    assert MARKER not in refused.text  # the message never quotes an answer
    assert await count_rows(app, form["id"]) == 0
    # The nonce stays usable: shortened, the same submission goes through.
    accepted = await submit(client, form["publicId"], nonce, long_answers(NOTES, 4_000))
    assert accepted.status_code == 201, accepted.text
    assert await count_rows(app, form["id"]) == 1


async def test_a_long_intake_form_with_the_largest_signature_fits(
    app: FastAPI, editor_http: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    form = await publish(editor_http, LONG_FORM)
    nonce = await fetch_nonce(client, form["publicId"])
    signature = largest_signature()
    assert len(signature) > 250 * 1024
    # 60 long answers (200 KB, far more than any intake form) and a 256 KiB signature.
    answers = long_answers(NOTES, 3_300, sig=signature)

    accepted = await submit(client, form["publicId"], nonce, answers)

    assert accepted.status_code == 201, accepted.text
    assert await count_rows(app, form["id"]) == 1


@pytest.mark.parametrize(
    "settings_overrides",
    [{"rate_limit_auth": GENEROUS_AUTH_RATE, "max_answers_bytes": 4096}],
)
async def test_the_cap_is_a_setting(
    app: FastAPI, editor_http: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    form = await publish(editor_http, LONG_FORM)
    nonce = await fetch_nonce(client, form["publicId"])
    refused = await submit(client, form["publicId"], nonce, long_answers(1, 5_000))
    assert refused.status_code == 422
    assert "4 KiB" in refused.json()["fields"]["answers"]
    assert (
        await submit(client, form["publicId"], nonce, long_answers(1, 3_000))
    ).status_code == 201
