"""Saving a form half-way and resuming it by link or code: on another device, after a
republish, never after it was sent or expired; sealed at rest, a bare pointer in Redis."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from datetime import datetime, timedelta
from typing import Any

from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import update

from healthforms.audit.models import AuditEventRow
from healthforms.audit.store import verify_chains
from healthforms.clock import utcnow
from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from healthforms.forms.models import Form, FormVersion
from healthforms.metrics import Metrics
from healthforms.retention.job import PurgeJob, RoundOutcome
from healthforms.submissions.drafts.service import normalize_code, sweep_expired
from tests.submissions.drafts.helpers import (
    MARKER,
    draft_rows,
    events,
    expire_drafts,
    half_answers,
    nonce_of,
    phone,
    public_id_of,
    resume_code,
    resume_link,
    save,
)
from tests.support.plaintext import sqlite_files_holding, tables_holding
from tests.support.response_factory import INTAKE_FIELDS, PublishedForm, signature_data_url
from tests.support.response_fixtures import AppWith

CODE_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{5}-[0-9A-HJKMNP-TV-Z]{5}$")
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")


def details(rows: list[AuditEventRow]) -> list[tuple[str, dict[str, object]]]:
    return [(row.action, json.loads(row.detail or "{}")) for row in rows]


async def test_save_then_resume_by_link_and_by_code_on_other_devices(
    app: FastAPI, db: Database, keys: KeyRing, clinic: PublishedForm
) -> None:
    public_id = await public_id_of(db, clinic.form_id)
    async with phone(app) as first:
        nonce = await nonce_of(first, public_id)
        answers = half_answers(signature=signature_data_url())
        saved = await save(first, public_id, answers, nonce=nonce)
        assert saved.status_code == 201, saved.text
        assert saved.headers["cache-control"] == "no-store"
        draft = saved.json()["draft"]
        assert set(draft) == {"token", "code", "expiresAt", "resumeUrl"}
        assert TOKEN_RE.match(draft["token"]) and CODE_RE.match(draft["code"])
        assert draft["resumeUrl"] == f"http://testserver/f/{public_id}#draft={draft['token']}"
        expires = utcnow() + timedelta(hours=72)
        assert abs(_parse(draft["expiresAt"]) - expires) < timedelta(minutes=1)

        # Saving again from the same page updates the same draft: same link, same code.
        more = {**answers, "dob": "1980-01-02"}
        again = await save(first, public_id, more, nonce=nonce, draft=draft["token"])
        assert again.status_code == 200, again.text
        assert {k: v for k, v in again.json()["draft"].items() if k != "expiresAt"} == {
            k: v for k, v in draft.items() if k != "expiresAt"
        }
    assert len(await draft_rows(db, clinic.form_id)) == 1

    expected = {k: v for k, v in more.items() if k != "signature"}  # never kept in a draft
    async with phone(app, ip="198.51.100.77") as other:
        by_link = await resume_link(other, draft["token"])
        assert by_link.status_code == 200, by_link.text
        assert by_link.headers["cache-control"] == "no-store"
        body = by_link.json()
        assert body["answers"] == expected
        assert body["dropped"] == []
        assert body["form"] == {"publicId": public_id, "version": 1}
        assert body["draft"]["token"] == draft["token"]
        assert body["draft"]["code"] == draft["code"]
    async with phone(app, ip="198.51.100.78") as third:
        # Typed as people type: lower case, no dash, an O for a zero.
        typed = draft["code"].replace("-", " ").lower().replace("0", "o")
        by_code = await resume_code(third, public_id, typed)
        assert by_code.status_code == 200, by_code.text
        assert by_code.json()["answers"] == expected
        assert by_code.json()["draft"]["token"] == draft["token"]

    recorded = details(await events(db, clinic.organization_id))
    assert recorded == [
        ("draft.saved", {"formId": clinic.form_id, "created": True}),
        ("draft.saved", {"formId": clinic.form_id, "created": False}),
        ("draft.resumed", {"formId": clinic.form_id, "via": "link", "dropped": 0}),
        ("draft.resumed", {"formId": clinic.form_id, "via": "code", "dropped": 0}),
    ]
    assert (await verify_chains(db, keys)).intact


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_sending_the_form_deletes_its_draft_in_the_same_transaction(
    app: FastAPI, db: Database, keys: KeyRing, clinic: PublishedForm, redis_client: Redis
) -> None:
    public_id = await public_id_of(db, clinic.form_id)
    async with phone(app) as first:
        saved = await save(first, public_id, half_answers(), nonce=await nonce_of(first, public_id))
        token = saved.json()["draft"]["token"]
    state = app.state.hf
    pointer = state.redis.key(f"draft:{{{_sha(token)}}}")
    assert await redis_client.get(pointer) is not None

    async with phone(app, ip="198.51.100.90") as other:
        resumed = (await resume_link(other, token)).json()
        answers = {
            **resumed["answers"],
            "email": "quill@example.org",
            "consent": True,
            "signature": signature_data_url(),
        }
        nonce = await nonce_of(other, public_id)
        body = {"nonce": nonce, "answers": answers, "draft": token}
        sent = await other.post(f"/api/public/forms/{public_id}/responses", json=body)
        assert sent.status_code == 201, sent.text
        # The same submission again (a phone that lost the reply): the same answer.
        again = await other.post(f"/api/public/forms/{public_id}/responses", json=body)
        assert again.status_code == 200, again.text
        assert (await resume_link(other, token)).status_code == 404
        # That page saving again (its nonce now used) makes no orphan draft.
        late = await save(other, public_id, half_answers(), nonce=nonce)
        assert late.status_code == 409 and late.json()["code"] == "nonce_used", late.text
        code = resumed["draft"]["code"]
        assert (await resume_code(other, public_id, code)).status_code == 404
    assert await draft_rows(db, clinic.form_id) == []
    assert await redis_client.get(pointer) is None
    recorded = details(await events(db, clinic.organization_id))
    assert recorded[-1] == ("draft.deleted", {"reason": "submitted"})
    submitted = await events(db, clinic.organization_id, "response.submitted")
    deleted = (await events(db, clinic.organization_id, "draft.deleted"))[0]
    # One transaction: the events sit side by side in the chain, with the same request.
    assert deleted.request_id == submitted[0].request_id
    assert deleted.seq == submitted[0].seq + 1
    assert (await verify_chains(db, keys)).intact


async def test_a_bad_or_stale_draft_token_never_blocks_a_submission(
    app: FastAPI, db: Database, clinic: PublishedForm
) -> None:
    public_id = await public_id_of(db, clinic.form_id)
    answers = {"name": "A Patient", "consent": True, "signature": signature_data_url()}
    async with phone(app) as device:
        for draft in ("x" * 43, 12, {"a": 1}, "not a token"):
            nonce = await nonce_of(device, public_id)
            body = {"nonce": nonce, "answers": answers, "draft": draft}
            sent = await device.post(f"/api/public/forms/{public_id}/responses", json=body)
            assert sent.status_code == 201, sent.text


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def test_an_expired_draft_is_refused_then_swept(
    app: FastAPI, db: Database, keys: KeyRing, clinic: PublishedForm
) -> None:
    public_id = await public_id_of(db, clinic.form_id)
    async with phone(app) as device:
        nonce = await nonce_of(device, public_id)
        draft = (await save(device, public_id, half_answers(), nonce=nonce)).json()["draft"]
        await expire_drafts(db, clinic.form_id)
        gone = await resume_link(device, draft["token"])
        assert gone.status_code == 410, gone.text
        assert gone.json()["code"] == "draft_expired"
        assert (await resume_code(device, public_id, draft["code"])).status_code == 410
        stale = await save(device, public_id, half_answers(), draft=draft["token"])
        assert stale.status_code == 410
        # The same page saving again without its token starts a fresh draft.
        fresh = await save(device, public_id, half_answers(), nonce=nonce)
        assert fresh.status_code == 201, fresh.text
        assert fresh.json()["draft"]["token"] != draft["token"]
    live = await draft_rows(db, clinic.form_id)
    assert len(live) == 1
    await expire_drafts(db, clinic.form_id)

    assert await sweep_expired(db, keys, batch=1) == 1
    assert await draft_rows(db, clinic.form_id) == []
    assert await sweep_expired(db, keys) == 0
    recorded = details(await events(db, clinic.organization_id, "draft.deleted"))
    assert recorded[-1] == ("draft.deleted", {"reason": "expired"})
    assert (await verify_chains(db, keys)).intact


async def test_expired_drafts_go_with_the_retention_purge_command(
    app: FastAPI, db: Database, keys: KeyRing, clinic: PublishedForm
) -> None:
    public_id = await public_id_of(db, clinic.form_id)
    async with phone(app) as device:
        for _ in range(3):
            nonce = await nonce_of(device, public_id)
            assert (await save(device, public_id, half_answers(), nonce=nonce)).status_code == 201
    async with db.sessions() as session, session.begin():
        rows = await draft_rows(db, clinic.form_id)
        await session.execute(
            update(type(rows[0]))
            .where(type(rows[0]).id.in_([r.id for r in rows[:2]]))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert await sweep_expired(db, keys, batch=1) == 2
    assert [r.id for r in await draft_rows(db, clinic.form_id)] == [rows[2].id]


async def test_answers_are_checked_loosely_but_checked(
    app_with: AppWith, db: Database, clinic: PublishedForm
) -> None:
    async with app_with(max_answers_bytes=2048) as app:
        public_id = await public_id_of(db, clinic.form_id)
        async with phone(app) as device:
            nonce = await nonce_of(device, public_id)
            # Nothing required, a half-typed email and date: fine in a draft.
            ok = await save(device, public_id, {"email": "ja", "dob": "19"}, nonce=nonce)
            assert ok.status_code == 201, ok.text
            cases: list[tuple[dict[str, Any], dict[str, str] | None]] = [
                ({"nope": "x"}, {"nope": "unknown field"}),
                ({"smoker": "Maybe"}, {"smoker": "must be one of the options"}),
                ({"allergies": ["Cats"]}, {"allergies": "must only contain the options"}),
                ({"consent": "yes"}, {"consent": "must be true or false"}),
                ({"name": ["a"]}, {"name": "must be text"}),
                ({"name": "n" * 1001}, {"name": "must be at most 1000 characters"}),
                ({"history": MARKER * 200}, None),  # over the 2 KiB cap
            ]
            for answers, expected in cases:
                refused = await save(device, public_id, answers, nonce=nonce)
                assert refused.status_code == 422, (answers, refused.text)
                fields = refused.json()["fields"]
                if expected is None:
                    assert set(fields) == {"answers"}
                else:
                    assert fields == expected
                assert MARKER not in refused.text
            # NaN parses from a body but is no JSON: refused, never stored (nor a 500
            # later, when the draft would be served back).
            for raw in ("NaN", "Infinity", "-Infinity", "1e400"):
                odd_number = await device.post(
                    f"/api/public/forms/{public_id}/drafts",
                    content=f'{{"nonce": "{nonce}", "answers": {{"packs": {raw}}}}}',
                    headers={"Content-Type": "application/json"},
                )
                assert odd_number.status_code in (400, 422), (raw, odd_number.text)
            bodies: list[object] = [[], "x", None]
            for body in bodies:
                odd = await device.post(f"/api/public/forms/{public_id}/drafts", json=body)
                assert odd.status_code in (400, 422), odd.text
            forged = await save(device, public_id, {"name": "x"}, nonce="a.b.c")
            assert forged.status_code == 400 and forged.json()["code"] == "nonce_invalid"
            unknown = await save(device, public_id, {"name": "x"}, draft="y" * 43)
            assert unknown.status_code == 404 and unknown.json()["code"] == "draft_not_found"
            for path in ("/api/public/drafts/short", "/api/public/drafts/" + "z" * 43):
                assert (await device.get(path)).status_code == 404
            assert (await device.post("/api/public/forms/nope/drafts", json={})).status_code == 404


async def test_wrong_codes_are_rate_limited_per_client_and_per_form(
    app_with: AppWith, db: Database, clinic: PublishedForm
) -> None:
    async with app_with(
        rate_limit_draft_code="3/min+0", rate_limit_draft_code_form="5/min+0"
    ) as app:
        public_id = await public_id_of(db, clinic.form_id)
        async with phone(app) as owner:
            nonce = await nonce_of(owner, public_id)
            code = (await save(owner, public_id, half_answers(), nonce=nonce)).json()["draft"][
                "code"
            ]
        wrong = "0000000000" if normalize_code(code) != "0000000000" else "1111111111"
        async with phone(app, ip="192.0.2.1") as guesser:
            for _ in range(3):
                missed = await resume_code(guesser, public_id, wrong)
                assert missed.status_code == 404, missed.text
                assert missed.json()["code"] == "draft_not_found"
            limited = await resume_code(guesser, public_id, code)  # even the right one
            assert limited.status_code == 429, limited.text
            assert limited.json()["code"] == "rate_limited"
            assert int(limited.headers["retry-after"]) >= 1
            assert code.replace("-", "") not in limited.text
        # Other addresses have buckets of their own; the form's (5) is shared: the three
        # misses took from it, the refused try did not (all buckets or none).
        for ip, status in (("192.0.2.2", 200), ("192.0.2.3", 200), ("192.0.2.4", 429)):
            async with phone(app, ip=ip) as other:
                assert (await resume_code(other, public_id, code)).status_code == status, ip
        refusals = await events(db, clinic.organization_id, "ratelimit.exceeded")
        assert {r.resource_id for r in refusals} == {"draft_code", "draft_code_form"}
        assert all(r.ip is None or r.ip.startswith("h:") for r in refusals)


async def test_a_republished_form_resumes_with_the_answers_that_still_fit(
    app: FastAPI, db: Database, clinic: PublishedForm
) -> None:
    public_id = await public_id_of(db, clinic.form_id)
    async with phone(app) as device:
        nonce = await nonce_of(device, public_id)
        draft = (await save(device, public_id, half_answers(), nonce=nonce)).json()["draft"]
    # Version 2: no medical history any more, smoking asked differently.
    fields = [f for f in INTAKE_FIELDS if f["id"] != "history"]
    fields = [
        {**f, "options": ["Never", "Former", "Current"]} if f["id"] == "smoker" else f
        for f in fields
    ]
    async with db.sessions() as session, session.begin():
        session.add(
            FormVersion(
                form_id=clinic.form_id,
                version=2,
                title="New patient intake",
                description="",
                fields=fields,
            )
        )
        await session.execute(update(Form).where(Form.id == clinic.form_id).values(version=2))
    async with phone(app, ip="198.51.100.99") as other:
        body = (await resume_link(other, draft["token"])).json()
    assert body["form"] == {"publicId": public_id, "version": 2}
    assert body["answers"] == {"name": MARKER, "email": "quill@", "allergies": ["Latex"]}
    assert body["dropped"] == ["history", "smoker"]


async def test_only_ciphertext_at_rest_and_only_a_pointer_in_redis(
    app: FastAPI,
    db: Database,
    clinic: PublishedForm,
    database_url: str,
    redis_client: Redis,
    redis_prefix: str,
) -> None:
    public_id = await public_id_of(db, clinic.form_id)
    async with phone(app) as device:
        nonce = await nonce_of(device, public_id)
        draft = (await save(device, public_id, half_answers(), nonce=nonce)).json()["draft"]
        assert (await resume_link(device, draft["token"])).status_code == 200
    code = draft["code"]
    for secret in (MARKER, draft["token"], code, code.replace("-", "")):
        assert await tables_holding(db, secret) == [], secret
        assert sqlite_files_holding(database_url, secret) == [], secret

    keys = [key async for key in redis_client.scan_iter(match=f"{redis_prefix}*", count=500)]
    drafts = [key for key in keys if b"draft:" in key]
    assert len(drafts) == 1
    (row,) = await draft_rows(db, clinic.form_id)
    assert drafts[0] == f"{redis_prefix}draft:{{{row.token_hash}}}".encode()
    assert await redis_client.get(drafts[0]) == row.id.encode()
    ttl = await redis_client.pttl(drafts[0])
    assert 71 * 3600 * 1000 < ttl <= 72 * 3600 * 1000
    for key in keys:
        assert await redis_client.pttl(key) > 0, key
        raw = await redis_client.dump(key) or b""
        for secret in (MARKER, draft["token"], code.replace("-", "")):
            assert secret.encode() not in key + raw, key


async def test_two_first_saves_at_once_make_one_draft(
    app: FastAPI, db: Database, clinic: PublishedForm
) -> None:
    public_id = await public_id_of(db, clinic.form_id)
    async with phone(app) as device:
        nonce = await nonce_of(device, public_id)
        variants = [half_answers(dob=f"1980-01-{day:02d}") for day in range(1, 9)]
        replies = await asyncio.gather(
            *(save(device, public_id, answers, nonce=nonce) for answers in variants)
        )
        statuses = sorted(r.status_code for r in replies)
        assert statuses == [200] * 7 + [201], [r.text for r in replies]
        drafts = {json.dumps(r.json()["draft"] | {"expiresAt": ""}) for r in replies}
        assert len(drafts) == 1
        token = replies[0].json()["draft"]["token"]
        # Then several saves through the link at once: still one draft, holding one whole
        # set of the answers sent.
        more = [half_answers(dob=f"1981-02-{day:02d}", name=f"N{day}") for day in range(1, 7)]
        updates = await asyncio.gather(
            *(save(device, public_id, answers, draft=token) for answers in more)
        )
        assert [r.status_code for r in updates] == [200] * 6
        stored = (await resume_link(device, token)).json()["answers"]
    assert len(await draft_rows(db, clinic.form_id)) == 1
    assert stored in more


async def test_the_daily_purge_round_sweeps_expired_drafts(
    app: FastAPI, db: Database, clinic: PublishedForm
) -> None:
    public_id = await public_id_of(db, clinic.form_id)
    async with phone(app) as device:
        for _ in range(2):
            nonce = await nonce_of(device, public_id)
            assert (await save(device, public_id, half_answers(), nonce=nonce)).status_code == 201
    await expire_drafts(db, clinic.form_id)
    state = app.state.hf
    job = PurgeJob(state.db, state.redis, state.keys, Metrics(), 3600.0, clock=lambda: 7.0e9)
    assert await job.run_round() is RoundOutcome.RAN
    assert await draft_rows(db, clinic.form_id) == []
    recorded = details(await events(db, clinic.organization_id, "draft.deleted"))
    assert recorded == [("draft.deleted", {"reason": "expired"})] * 2


async def test_the_holder_can_throw_a_draft_away(
    app: FastAPI, db: Database, clinic: PublishedForm, redis_client: Redis
) -> None:
    public_id = await public_id_of(db, clinic.form_id)
    async with phone(app) as device:
        nonce = await nonce_of(device, public_id)
        draft = (await save(device, public_id, half_answers(), nonce=nonce)).json()["draft"]
        pointer = app.state.hf.redis.key(f"draft:{{{_sha(draft['token'])}}}")
        assert await redis_client.exists(pointer) == 1
        thrown = await device.delete(f"/api/public/drafts/{draft['token']}")
        assert thrown.status_code == 204, thrown.text
        assert (await device.delete(f"/api/public/drafts/{draft['token']}")).status_code == 404
        assert (await resume_link(device, draft["token"])).status_code == 404
    assert await redis_client.exists(pointer) == 0
    assert await draft_rows(db, clinic.form_id) == []
    recorded = details(await events(db, clinic.organization_id, "draft.deleted"))
    assert recorded == [("draft.deleted", {"reason": "discarded"})]
