"""How long `healthforms backup` and `healthforms restore` take on a clinic-sized database
(the figures behind docs/operations/disaster-recovery.md's RTO).

    .venv/bin/python -m bench.backup [--responses 20000] [--database sqlite|postgresql]

Fills a fresh database with sealed responses (each with its audit event), then times
the backup (snapshot + encryption) and the restore (decryption, hash checks, load,
row counts, chain heads and the decryption of every response) through the CLI, as an
operator runs them.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from healthforms.audit.events import AuditEvent
from healthforms.audit.store import append_events
from healthforms.backup.sealing import generate_backup_key
from healthforms.crypto.keys import KeyRing, generate_key
from healthforms.db.engine import Database
from tests.support import legs
from tests.support.response_factory import create_form, create_organization, create_response

PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


async def _fill(url: str, keys: KeyRing, responses: int) -> None:
    db = Database.connect(url)
    try:
        org = await create_organization(db)
        (form,) = await create_form(db, org)
        for start in range(0, responses, 200):
            batch = range(start, min(start + 200, responses))
            await asyncio.gather(
                *(
                    create_response(
                        db,
                        keys,
                        form,
                        {"full_name": f"Bench {n}", "date_of_birth": "1980-01-01"},
                    )
                    for n in batch
                )
            )
            await append_events(
                db,
                keys,
                [
                    AuditEvent(action="response.submitted", organization_id=org, resource_id=str(n))
                    for n in batch
                ],
            )
    finally:
        await db.dispose()


def _cli(*args: str, env: dict[str, str]) -> float:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "healthforms", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{args[0]} failed: {done.stdout}{done.stderr}")
    print(done.stdout.rstrip())
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--responses", type=int, default=20_000)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    options = parser.parse_args()
    if options.database == "postgresql":
        os.environ["HEALTHFORMS_TEST_DATABASE"] = PG
        legs.TEST_DATABASE = PG
    work = Path(tempfile.mkdtemp(prefix="hf-bench-backup-"))
    master = generate_key()
    ring = KeyRing(current=base64.b64decode(master))
    source = legs.create_database(work / "source")
    target = ""
    try:
        started = time.monotonic()
        asyncio.run(_fill(source, ring, options.responses))
        print(f"filled {options.responses} responses in {time.monotonic() - started:.1f} s")
        backup_key = generate_backup_key()
        (work / "backup.key").write_text(backup_key.private_text())
        env = {
            "DATABASE_URL": source,
            "HEALTHFORMS_ENCRYPTION_KEY": master,
            "HEALTHFORMS_DATA_DIR": str(work / "data"),
            "HEALTHFORMS_LOG_LEVEL": "warning",
            "HEALTHFORMS_BACKUP_KEY": backup_key.public_text,
        }
        archive = work / "bench.hfbk"
        backup_s = _cli("backup", "--out", str(archive), env=env)
        if options.database == "postgresql":
            name = f"hf_bench_{secrets.token_hex(4)}"
            asyncio.run(legs.pg_admin(PG, f'CREATE DATABASE "{name}"'))
            target = PG.rsplit("/", 1)[0] + f"/{name}"
        else:
            target = f"sqlite+aiosqlite:///{work / 'restored.db'}"
        restore_s = _cli(
            "restore",
            "--in",
            str(archive),
            "--key-file",
            str(work / "backup.key"),
            "--database-url",
            target,
            env={**env, "HEALTHFORMS_DATA_DIR": str(work / "new-data")},
        )
        verify_s = _cli(
            "audit",
            "verify",
            env={**env, "DATABASE_URL": target, "HEALTHFORMS_DATA_DIR": str(work / "new-data")},
        )
        print(
            f"{options.database}: {options.responses} responses, archive "
            f"{archive.stat().st_size / 1e6:.1f} MB; backup {backup_s:.1f} s, restore with "
            f"checks {restore_s:.1f} s, audit verify {verify_s:.1f} s"
        )
    finally:
        legs.drop_database(source)
        if target:
            legs.drop_database(target)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
