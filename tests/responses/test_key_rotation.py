"""`healthforms keys rotate`: data keys move to the new master key; reads never stop."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select

from healthforms.crypto.envelope import (
    Sealed,
    note_aad,
    open_json,
    open_sealed,
    pdf_aad,
    seal,
    seal_json,
)
from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from healthforms.identity.models import User
from healthforms.identity.totp import open_secret, seal_secret
from healthforms.responses.key_rotation import rotate_keys
from healthforms.responses.models import ResponseNote, ResponsePdf, ResponseRow
from healthforms.responses.service import open_response
from tests.support.response_factory import (
    PublishedForm,
    create_form,
    create_organization,
    create_response,
    intake_answers,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
OLD = b"o" * 32
NEW = b"n" * 32
STRANGER = b"s" * 32


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


@pytest.fixture
async def rotation_db(fresh_database_url: str) -> AsyncIterator[Database]:
    db = Database.connect(fresh_database_url)
    try:
        yield db
    finally:
        await db.dispose()


async def seed(db: Database, responses: int) -> tuple[PublishedForm, dict[str, dict[str, Any]]]:
    old = KeyRing(current=OLD)
    org = await create_organization(db)
    form = (await create_form(db, org))[0]
    stored: dict[str, dict[str, Any]] = {}
    for n in range(responses):
        answers = intake_answers(name=f"Patient {n}")
        stored[await create_response(db, old, form, answers)] = answers
    return form, stored


async def add_pdf(db: Database, keys: KeyRing, response_id: str, content: bytes) -> None:
    sealed = seal(keys, content, pdf_aad(response_id))
    async with db.sessions() as session, session.begin():
        session.add(
            ResponsePdf(
                response_id=response_id,
                ciphertext=sealed.ciphertext,
                wrapped_key=sealed.wrapped_key,
                key_id=sealed.key_id,
                sha256="0" * 64,
                size_bytes=len(content),
                fence=1,
            )
        )


def run_rotate(
    database_url: str, tmp_path: Path, batch: int = 3
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "DATABASE_URL": database_url,
        "HEALTHFORMS_DATA_DIR": str(tmp_path / "data"),
        "HEALTHFORMS_ENCRYPTION_KEY": b64(NEW),
        "HEALTHFORMS_PREVIOUS_ENCRYPTION_KEYS": f"{b64(OLD)}, {b64(b'x' * 32)}",
        "HEALTHFORMS_LOG_LEVEL": "warning",
    }
    return subprocess.run(
        [sys.executable, "-m", "healthforms", "keys", "rotate", "--batch-size", str(batch)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_keys_rotate_rewraps_responses_pdfs_and_totp_secrets(
    rotation_db: Database, fresh_database_url: str, tmp_path: Path
) -> None:
    db = rotation_db
    old = KeyRing(current=OLD)
    form, stored = await seed(db, 7)
    first, second = list(stored)[:2]
    await add_pdf(db, old, first, b"%PDF-1.7 first")
    await add_pdf(db, old, second, b"%PDF-1.7 second")
    note_sealed = seal_json(old, {"text": "staff note"}, note_aad("nte_rotated", first))
    async with db.sessions() as session, session.begin():
        session.add(
            ResponseNote(
                id="nte_rotated",
                response_id=first,
                organization_id=form.organization_id,
                author_id="usr_x",
                ciphertext=note_sealed.ciphertext,
                wrapped_key=note_sealed.wrapped_key,
                key_id=note_sealed.key_id,
            )
        )
    orphan = await create_response(db, KeyRing(current=STRANGER), form, intake_answers())
    async with db.sessions() as session, session.begin():
        user = User(organization_id=form.organization_id, email="a@example.org", name="A")
        session.add(user)
        await session.flush()
        user.totp_secret_encrypted = seal_secret(old, user.id, "JBSWY3DPEHPK3PXP")
        user_id = user.id
    async with db.sessions() as session:
        before = {
            r.id: r.ciphertext for r in (await session.execute(select(ResponseRow))).scalars()
        }

    result = await asyncio.to_thread(run_rotate, fresh_database_url, tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr  # the orphan failed
    new = KeyRing(current=NEW)
    assert f"current key: {new.current_id}" in result.stdout
    assert "responses: 7 re-wrapped, 0 already current, 1 failed" in result.stdout
    assert "response_pdfs: 2 re-wrapped, 0 already current, 0 failed" in result.stdout
    assert "response_notes: 1 re-wrapped, 0 already current, 0 failed" in result.stdout
    assert "users.totp_secret_encrypted: 1 re-wrapped, 0 already current, 0 failed" in (
        result.stdout
    )
    # The orphan's answers, and its patient identity with the blind indexes made from it.
    assert "response_identities: 7 re-wrapped, 0 already current, 1 failed" in result.stdout
    assert "response_search_tokens: 7 re-wrapped, 0 already current, 1 failed" in (result.stdout)
    assert "3 record(s) could not be re-wrapped" in result.stderr
    assert b64(NEW) not in result.stdout + result.stderr  # no key material printed

    # With the old key gone entirely, everything rotated still opens.
    async with db.sessions() as session:
        rows = list((await session.execute(select(ResponseRow))).scalars())
        pdfs = list((await session.execute(select(ResponsePdf))).scalars())
        user_row = await session.get(User, user_id)
    for row in rows:
        if row.id == orphan:
            assert row.key_id == KeyRing(current=STRANGER).current_id
            continue
        assert row.key_id == new.current_id
        assert row.ciphertext == before[row.id]  # only the data key was re-wrapped
        assert open_response(new, row).answers == stored[row.id]
    assert {p.key_id for p in pdfs} == {new.current_id}
    assert {
        open_sealed(new, Sealed(p.ciphertext, p.wrapped_key, p.key_id), pdf_aad(p.response_id))
        for p in pdfs
    } == {b"%PDF-1.7 first", b"%PDF-1.7 second"}
    async with db.sessions() as session:
        note = await session.get(ResponseNote, "nte_rotated")
    assert note is not None and note.key_id == new.current_id
    sealed_note = Sealed(note.ciphertext, note.wrapped_key, note.key_id)
    assert open_json(new, sealed_note, note_aad(note.id, first)) == {"text": "staff note"}
    assert user_row is not None and user_row.totp_secret_encrypted is not None
    assert open_secret(new, user_id, user_row.totp_secret_encrypted) == "JBSWY3DPEHPK3PXP"

    # Run again without the orphan: nothing left to do, exit 0.
    async with db.sessions() as session, session.begin():
        await session.execute(delete(ResponseRow).where(ResponseRow.id == orphan))
    again = await asyncio.to_thread(run_rotate, fresh_database_url, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "responses: 0 re-wrapped, 7 already current, 0 failed" in again.stdout
    assert "users.totp_secret_encrypted: 0 re-wrapped, 1 already current, 0 failed" in (
        again.stdout
    )


async def test_reads_keep_working_while_a_rotation_runs(rotation_db: Database) -> None:
    db = rotation_db
    _, stored = await seed(db, 40)
    # Every instance has the new key and still knows the old one.
    ring = KeyRing(current=NEW, previous=(OLD,))
    seen_keys: set[str] = set()
    reads = 0
    done = asyncio.Event()

    async def reader() -> None:
        nonlocal reads
        while not done.is_set():
            async with db.sessions() as session:
                for row in (await session.execute(select(ResponseRow))).scalars():
                    assert open_response(ring, row).answers == stored[row.id]
                    seen_keys.add(row.key_id)
                    reads += 1
            await asyncio.sleep(0)

    async def rotator() -> None:
        try:
            counts = await rotate_keys(db, ring, batch=4)
        finally:
            done.set()
        assert counts[0].rewrapped == 40 and counts[0].failed == 0

    await asyncio.gather(reader(), reader(), rotator())
    assert reads >= 40
    async with db.sessions() as session:
        key_ids = set((await session.execute(select(ResponseRow.key_id))).scalars())
    assert key_ids == {ring.current_id}
    # Reads ran while rows moved: they opened rows under the old key and the new one.
    assert seen_keys == {KeyRing(current=OLD).current_id, ring.current_id}
