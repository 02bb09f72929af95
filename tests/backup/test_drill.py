"""The disaster-recovery drill (docs/operations/disaster-recovery.md), end to end.

Data is made through the real API (staff sign-in, a form built and published, patients'
submissions and a saved draft, staff reads: each audited), the service is stopped,
`healthforms backup` takes the encrypted snapshot, the database is destroyed,
`healthforms restore` puts it into a brand-new database, and then: `healthforms audit
verify` passes against the restored checkpoints, rows per table and chain heads equal
the pre-disaster figures, every response decrypts under the master key, and a new
service on the restored database serves the same answers to the same staff member and
resumes the draft. Leg A restores SQLite into SQLite, leg B PostgreSQL
(pg_dump/pg_restore) into a database created for the test; a cross-engine restore is
not offered.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import io
import secrets
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from healthforms.app import create_app
from healthforms.backup.database import read_figures
from healthforms.backup.sealing import load_backup_key, open_stream
from healthforms.backup.service import check_sealed
from healthforms.config import Settings
from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from healthforms.security.principal import Role
from tests.backup.conftest import (
    KeyPair,
    cli_env,
    database_is_empty,
    destroy_database,
    empty_database,
)
from tests.cli.test_config import run_cli
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.support import legs
from tests.support.identity import Staff, create_staff, login, new_client
from tests.support.response_factory import create_form, create_organization, create_response
from tests.support.workflow import DRILL_FIELDS

PATIENTS = 4


Answers = dict[str, dict[str, Any]]


async def _populate(settings: Settings) -> tuple[Staff, Answers, Answers]:
    """Through the API: a staff admin builds and publishes a form, patients submit (one
    saves a draft instead), staff reads each response. Returns the staff member, the
    answers by response id and the draft's answers by its token."""
    app = create_app(settings)
    answers: Answers = {}
    drafts: Answers = {}
    async with app.router.lifespan_context(app):
        staff = await create_staff(app, role=Role.ADMIN)
        async with new_client(app) as http:
            signed_in = await login(http, staff)
            http.headers.update(signed_in.csrf_headers)
            created = await http.post(
                "/api/forms", json={"title": "Drill intake", "fields": DRILL_FIELDS}
            )
            assert created.status_code == 201, created.text
            form_id = created.json()["id"]
            published = await http.post(f"/api/forms/{form_id}/publish")
            assert published.status_code == 200, published.text
            public_id = published.json()["publicId"]
            # An EHR's webhook endpoint, its secret rotated: two sealed secrets to restore.
            hook = await http.post(
                "/api/webhooks",
                json={"url": "http://127.0.0.1:9/hooks", "events": ["form.published"]},
            )
            assert hook.status_code == 201, hook.text
            rotated = await http.post(f"/api/webhooks/{hook.json()['id']}/rotate-secret")
            assert rotated.status_code == 200, rotated.text
            for n in range(PATIENTS):
                sent = {
                    "full_name": f"Drillpatient {n} {secrets.token_hex(4)}",
                    "reason": f"reason {n}",
                    "consent": True,
                }
                async with new_client(app, ip=f"198.51.100.{n + 1}") as patient:
                    nonce = (await patient.get(f"/api/public/forms/{public_id}")).json()["nonce"]
                    made = await patient.post(
                        f"/api/public/forms/{public_id}/responses",
                        json={"nonce": nonce, "answers": sent},
                    )
                    assert made.status_code == 201, made.text
            # A patient who saved a draft to finish later (sealed too, resumable after).
            async with new_client(app, ip="198.51.100.99") as patient:
                nonce = (await patient.get(f"/api/public/forms/{public_id}")).json()["nonce"]
                half = {"full_name": f"Drillpatient draft {secrets.token_hex(4)}"}
                saved = await patient.post(
                    f"/api/public/forms/{public_id}/drafts",
                    json={"nonce": nonce, "answers": half},
                )
                assert saved.status_code == 201, saved.text
                drafts[saved.json()["draft"]["token"]] = half
            listed = await http.get(f"/api/forms/{form_id}/responses")
            assert listed.status_code == 200, listed.text
            for row in listed.json()["responses"]:
                read = await http.get(f"/api/responses/{row['id']}")  # an audited PHI read
                assert read.status_code == 200, read.text
                answers[row["id"]] = read.json()["answers"]
    # Leaving the lifespan wrote the final audit checkpoint (checkpoints.py).
    assert len(answers) == PATIENTS and len(drafts) == 1
    return staff, answers, drafts


async def _served(
    settings: Settings, staff: Staff, ids: list[str], tokens: list[str]
) -> tuple[Answers, Answers]:
    """What a service on the restored database serves: each response to the same staff
    member, each draft to the patient's link."""
    app = create_app(settings)
    served: Answers = {}
    resumed: Answers = {}
    async with app.router.lifespan_context(app), new_client(app) as http:
        signed_in = await login(http, staff)
        http.headers.update(signed_in.csrf_headers)
        for response_id in ids:
            read = await http.get(f"/api/responses/{response_id}")
            assert read.status_code == 200, read.text
            served[response_id] = read.json()["answers"]
        async with new_client(app, ip="198.51.100.99") as patient:
            for token in tokens:
                draft = await patient.get(f"/api/public/drafts/{token}")
                assert draft.status_code == 200, draft.text
                resumed[token] = draft.json()["answers"]
    return served, resumed


def _plaintext_parts(archive: Path, keys: KeyPair) -> dict[str, bytes]:
    """Every part of the archive, decrypted; a PostgreSQL dump as the SQL it restores."""
    plain = io.BytesIO()
    with archive.open("rb") as source:
        open_stream(source, plain, load_backup_key(keys.private))
    parts: dict[str, bytes] = {"<tar.gz>": plain.getvalue()}
    tar_bytes = gzip.decompress(plain.getvalue())
    parts["<tar>"] = tar_bytes
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        for member in tar:
            extracted = tar.extractfile(member)
            assert extracted is not None
            parts[member.name] = extracted.read()
    if "database.pgdump" in parts:
        sql = subprocess.run(
            ["pg_restore", "--file=-"],
            input=parts["database.pgdump"],
            capture_output=True,
            check=True,
        )
        parts["database.pgdump (as SQL)"] = sql.stdout
    return parts


async def test_backup_destroy_restore_verify_drill(
    settings: Settings,
    redis_client: Redis,
    fresh_database_url: str,
    backup_keys: KeyPair,
    tmp_path: Path,
) -> None:
    settings = settings.model_copy(update={"database_url": fresh_database_url})
    staff, answers, drafts = await _populate(settings)
    before = await read_figures(fresh_database_url)
    assert before.counts["responses"] == PATIENTS and before.heads
    assert before.counts["form_drafts"] == 1

    archive = tmp_path / "drill.hfbk"
    started = time.monotonic()
    taken = run_cli(
        "backup",
        "--out",
        str(archive),
        "--key-file",
        str(backup_keys.public),  # the server needs only the public key
        env=cli_env(fresh_database_url, settings.data_dir),
    )
    backup_s = time.monotonic() - started
    assert taken.returncode == 0, taken.stdout + taken.stderr
    assert "encrypted to backup key" in taken.stdout
    assert f"{sum(before.counts.values())} rows" in taken.stdout

    # The master key, in every form it is written, is in no part of the archive; nor is
    # any patient's answer in clear.
    master = base64.b64decode(TEST_ENCRYPTION_KEY)
    secrets_to_find = [master, TEST_ENCRYPTION_KEY.encode(), master.hex().encode()]
    names = [a["full_name"].encode() for a in (*answers.values(), *drafts.values())]
    parts = await asyncio.to_thread(_plaintext_parts, archive, backup_keys)
    parts["<archive>"] = archive.read_bytes()
    assert {"manifest.json", "manifest.sig", "audit-checkpoints.jsonl"} <= set(parts)
    for name, content in parts.items():
        for secret in secrets_to_find:
            assert secret not in content, f"master key material in {name}"
        for patient in names:
            assert patient not in content, f"a patient's answer in clear in {name}"

    # The disaster: the database and the data directory (checkpoints, key file) are gone.
    await asyncio.to_thread(destroy_database, fresh_database_url)
    new_data_dir = tmp_path / "new-machine"
    target = await asyncio.to_thread(empty_database, tmp_path / "restored")
    try:
        started = time.monotonic()
        restored = run_cli(
            "restore",
            "--in",
            str(archive),
            "--key-file",
            str(backup_keys.private),
            "--database-url",
            target,
            env=cli_env(target, new_data_dir),
        )
        restore_s = time.monotonic() - started
        assert restored.returncode == 0, restored.stdout + restored.stderr
        said = taken.stdout + taken.stderr + restored.stdout + restored.stderr
        for key_text in (TEST_ENCRYPTION_KEY, backup_keys.private.read_text().strip()):
            assert key_text not in said  # no key in what the commands print
        assert not any(a["full_name"] in said for a in answers.values())  # nor PHI
        assert "every sealed record opens" in restored.stdout
        assert f"{PATIENTS} responses" in restored.stdout and "1 drafts" in restored.stdout

        verified = run_cli("audit", "verify", env=cli_env(target, new_data_dir))
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "intact" in verified.stdout and "no checkpoints" not in verified.stdout
        assert " 0 checkpoints matched" not in verified.stdout

        after = await read_figures(target)
        assert after.counts == before.counts
        assert after.heads == before.heads
        assert after.revision == before.revision
        keys = KeyRing.from_settings(settings)
        sealed = await check_sealed(target, keys)
        assert sealed["responses"] == (PATIENTS, 0) and sealed["drafts"] == (1, 0)
        assert sealed["webhook secrets"] == (1, 0)
        assert sealed["previous webhook secrets"] == (1, 0)
        assert not any(failed for _, failed in sealed.values())
        new_settings = settings.model_copy(update={"database_url": target})
        served, resumed = await _served(new_settings, staff, sorted(answers), sorted(drafts))
        assert served == answers
        assert {t: {k: a[k] for k in drafts[t]} for t, a in resumed.items()} == drafts
        rows = sum(before.counts.values())
        print(
            f"\ndrill ({'postgresql' if legs.database_is_postgres() else 'sqlite'}): "
            f"{len(before.counts)} tables, {rows} rows, {len(before.heads)} audit chain(s), "
            f"archive {archive.stat().st_size} bytes; backup {backup_s:.2f} s, "
            f"restore+checks {restore_s:.2f} s (CLI processes included)"
        )
    finally:
        await asyncio.to_thread(legs.drop_database, target)


async def test_restore_refuses_a_database_that_is_not_empty(
    database_url: str, shared_backup: Path, backup_keys_shared: KeyPair, tmp_path: Path
) -> None:
    refused = run_cli(
        "restore",
        "--in",
        str(shared_backup),
        "--key-file",
        str(backup_keys_shared.private),
        "--database-url",
        database_url,  # the live, migrated database
        env=cli_env(database_url, tmp_path / "data"),
    )
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "fresh database only" in refused.stderr


async def test_restore_needs_the_master_key_and_the_private_backup_key(
    database_url: str,
    shared_backup: Path,
    backup_keys_shared: KeyPair,
    tmp_path: Path,
    empty_target_url: str,
) -> None:
    env = cli_env(database_url, tmp_path / "data")
    args = ["restore", "--in", str(shared_backup), "--database-url", empty_target_url]
    public_only = run_cli(*args, "--key-file", str(backup_keys_shared.public), env=env)
    assert public_only.returncode == 2 and "private" in public_only.stderr
    no_master = {k: v for k, v in env.items() if k != "HEALTHFORMS_ENCRYPTION_KEY"}
    no_master["HEALTHFORMS_DATA_DIR"] = str(tmp_path / "empty-data")
    without = run_cli(*args, "--key-file", str(backup_keys_shared.private), env=no_master)
    assert without.returncode == 2, without.stdout + without.stderr
    assert "master encryption key is not configured" in without.stderr
    assert not (tmp_path / "empty-data" / "encryption.key").exists()  # none minted
    assert await asyncio.to_thread(database_is_empty, empty_target_url)


async def test_a_record_under_a_key_not_configured_fails_the_restore_and_is_named(
    fresh_database_url: str, backup_keys: KeyPair, tmp_path: Path
) -> None:
    """After a rotation, a backup can hold records under the previous master key: the
    restore says so (exit 1) until that key is listed again, and then passes."""
    current = KeyRing(current=base64.b64decode(TEST_ENCRYPTION_KEY))
    previous_text = base64.b64encode(secrets.token_bytes(32)).decode()
    previous = KeyRing(current=base64.b64decode(previous_text))
    db = Database.connect(fresh_database_url)
    try:
        org = await create_organization(db)
        (form,) = await create_form(db, org)
        await create_response(db, current, form, {"name": "Current Key"})
        await create_response(db, previous, form, {"name": "Older Key"})
    finally:
        await db.dispose()
    archive = tmp_path / "rotated.hfbk"
    env = cli_env(fresh_database_url, tmp_path / "data")
    taken = run_cli("backup", "--out", str(archive), "--key-file", str(backup_keys.public), env=env)
    assert taken.returncode == 0, taken.stdout + taken.stderr

    first = await asyncio.to_thread(empty_database, tmp_path / "first")
    second = await asyncio.to_thread(empty_database, tmp_path / "second")
    try:
        args = ["restore", "--in", str(archive), "--key-file", str(backup_keys.private)]
        missing = run_cli(*args, "--database-url", first, env=cli_env(first, tmp_path / "a"))
        assert missing.returncode == 1, missing.stdout + missing.stderr
        assert "FAILED: 1 responses, 1 patient identities do not open" in missing.stdout
        listed = run_cli(
            *args,
            "--database-url",
            second,
            env=cli_env(second, tmp_path / "b", HEALTHFORMS_PREVIOUS_ENCRYPTION_KEYS=previous_text),
        )
        assert listed.returncode == 0, listed.stdout + listed.stderr
        assert "every sealed record opens" in listed.stdout and "2 responses" in listed.stdout
    finally:
        await asyncio.to_thread(legs.drop_database, first)
        await asyncio.to_thread(legs.drop_database, second)
