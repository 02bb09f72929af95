"""A patient's request link posted as plain HTML (no JavaScript): the request API's
submission, once, completing the request; the link's nonce works only there."""

from __future__ import annotations

import asyncio
import html
import re
from urllib.parse import urlencode

import httpx
from fastapi import FastAPI

from healthforms.db.engine import Database
from tests.patient_requests.helpers import (
    PATIENT_NAME,
    create_request,
    public_id_of,
    request_row,
    response_count,
    token_of,
)
from tests.support.apps import asgi_client
from tests.support.response_factory import PublishedForm

NONCE_RE = re.compile(r'name="_nonce" id="form-nonce" value="([^"]+)"')
CODE_RE = re.compile(r'id="confirmation-code">([A-Z2-9]{10})<')
FORM = {"content-type": "application/x-www-form-urlencoded", "accept": "text/html"}
ANSWERS = [("name", "Answered Name"), ("smoker", "No"), ("consent", "true")]


def _body(nonce: str, pairs: list[tuple[str, str]]) -> bytes:
    return urlencode([("_nonce", nonce), *pairs]).encode()


async def test_a_request_link_posts_once_and_completes_the_request(
    app: FastAPI, db: Database, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    created = await create_request(admin, clinic.form_id)
    token = token_of(created["link"])
    async with asgi_client(app) as phone:
        page = await phone.get(f"/r/{token}", headers={"accept": "text/html"})
        assert page.status_code == 200
        # It posts to its own address: the token stays out of the HTML.
        assert 'method="post" novalidate' in page.text and token not in page.text
        # The HTML alone shows no prefill (PHI) and does not count as opening the link.
        assert PATIENT_NAME not in page.text
        assert (await request_row(db, created["request"]["id"])).state != "opened"
        found = NONCE_RE.search(page.text)
        assert found is not None
        nonce = html.unescape(found.group(1))

        # The public link's page does not take a request's nonce (scope), nor the reverse.
        public_id = await public_id_of(db, clinic.form_id)
        foreign = await phone.post(f"/f/{public_id}", content=_body(nonce, ANSWERS), headers=FORM)
        assert foreign.status_code == 400

        refused = await phone.post(
            f"/r/{token}", content=_body(nonce, [("email", "nope"), *ANSWERS]), headers=FORM
        )
        assert refused.status_code == 422
        assert 'id="q-email-error">Must be an email address</p>' in refused.text

        first, second = await asyncio.gather(
            phone.post(f"/r/{token}", content=_body(nonce, ANSWERS), headers=FORM),
            phone.post(f"/r/{token}", content=_body(nonce, ANSWERS), headers=FORM),
        )
        codes = set()
        for reply in (first, second):
            if reply.status_code == 409:
                continue  # the other copy was being stored that moment
            assert reply.status_code == 200, reply.text
            codes.add(CODE_RE.search(reply.text).group(1))  # type: ignore[union-attr]
        # Back and Send again on the used link: the same confirmation, still once.
        again = await phone.post(f"/r/{token}", content=_body(nonce, ANSWERS), headers=FORM)
        assert again.status_code == 200
        codes.add(CODE_RE.search(again.text).group(1))  # type: ignore[union-attr]
        assert len(codes) == 1
        other = await phone.post(
            f"/r/{token}", content=_body(nonce, [*ANSWERS, ("history", "x")]), headers=FORM
        )
        assert other.status_code in (409, 410)
        closed = await phone.get(f"/r/{token}", headers={"accept": "text/html"})
        assert closed.status_code == 410
        unknown = await phone.post("/r/not-a-token", content=_body(nonce, ANSWERS), headers=FORM)
        assert unknown.status_code == 404 and "This link cannot be used" in unknown.text
    assert await response_count(db, clinic.form_id) == 1
    row = await request_row(db, created["request"]["id"])
    assert row.state == "completed" and row.response_id is not None
