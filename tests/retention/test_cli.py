"""`healthforms purge` as an operator runs it: a dry run counts and changes nothing, a
purge prints its counts and checkpoints its events so `audit verify` passes, two at
once never both take a response, and a form that cannot be purged exits 1."""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path

from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from tests.cli.test_config import run_cli
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.retention.helpers import (
    clinic_form,
    days_old,
    detail,
    event_count,
    left_of,
    purge_events,
    refuse_purge_events,
)

ALL_RECORDS = ("responses", "pdfs", "notes")


def env_of(database_url: str, data_dir: Path) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "HEALTHFORMS_DATA_DIR": str(data_dir),
        "HEALTHFORMS_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
        "HEALTHFORMS_LOG_LEVEL": "warning",
    }


def purge(database_url: str, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("purge", *args, env=env_of(database_url, data_dir))


def form_line(output: str, form_id: str) -> str:
    (line,) = [line for line in output.splitlines() if f"form {form_id} " in line]
    return line


async def test_dry_run_counts_per_form_and_changes_nothing(
    own_db: Database, ring: KeyRing, fresh_database_url: str, tmp_path: Path
) -> None:
    intake = await clinic_form(own_db, 30)
    consent = await clinic_form(own_db, 365)
    recent = await clinic_form(own_db, 30)
    forever = await clinic_form(own_db, None)
    ids = (
        await days_old(own_db, ring, intake, 31, 60, 90)
        + await days_old(own_db, ring, consent, 400, 10)
        + await days_old(own_db, ring, recent, 1)
        + await days_old(own_db, ring, forever, 5000)
    )
    events = await event_count(own_db)

    result = purge(fresh_database_url, tmp_path, "--dry-run")

    assert result.returncode == 0, result.stdout + result.stderr
    line = form_line(result.stdout, intake.form_id)
    assert line.startswith("purge (dry run): ") and line.endswith("would be purged")
    assert ": 3 response(s) submitted before " in line and "kept 30 days" in line
    assert ": 1 response(s)" in form_line(result.stdout, consent.form_id)
    assert recent.form_id not in result.stdout and forever.form_id not in result.stdout
    assert result.stdout.splitlines()[-1] == (
        "purge (dry run): 4 response(s) of 2 form(s) would be purged; nothing was deleted "
        "(3 form(s) have a retention period)"
    )
    assert "Pat Patient" not in result.stdout + result.stderr  # counts only, never PHI
    assert await left_of(own_db, ids) == {kind: set(ids) for kind in ALL_RECORDS}
    assert await event_count(own_db) == events
    assert not (tmp_path / "audit-checkpoints.jsonl").exists()


async def test_purge_prints_its_counts_and_audit_verify_passes_after_it(
    own_db: Database, ring: KeyRing, fresh_database_url: str, tmp_path: Path
) -> None:
    intake = await clinic_form(own_db, 30)
    expired = await days_old(own_db, ring, intake, 31, 60, 90)
    young = await days_old(own_db, ring, intake, 2)

    result = purge(fresh_database_url, tmp_path, "--batch-size", "2")

    assert result.returncode == 0, result.stdout + result.stderr
    line = form_line(result.stdout, intake.form_id)
    assert line.startswith("purge: form ") and line.endswith(" purged")
    assert ": 3 response(s) submitted before " in line
    assert result.stdout.splitlines()[-1] == (
        "purge: 3 response(s) of 1 form(s) purged (1 form(s) have a retention period)"
    )
    assert await left_of(own_db, expired) == {kind: set() for kind in ALL_RECORDS}
    assert await left_of(own_db, young) == {kind: set(young) for kind in ALL_RECORDS}
    events = await purge_events(own_db, intake.form_id)
    assert [detail(e)["count"] for e in events] == [2, 1]
    assert sorted(i for e in events for i in detail(e)["responseIds"]) == sorted(expired)

    # The purge checkpointed the chain it wrote to: its events are anchored outside the
    # database, and the chain verifies against that checkpoint.
    verified = run_cli("audit", "verify", env=env_of(fresh_database_url, tmp_path))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "intact" in verified.stdout
    matched = re.search(r"(\d+) checkpoints matched", verified.stdout)
    assert matched is not None and int(matched.group(1)) >= 1

    again = purge(fresh_database_url, tmp_path)
    assert again.returncode == 0
    assert again.stdout.splitlines()[-1].startswith("purge: 0 response(s) of 0 form(s) purged")
    assert len(await purge_events(own_db, intake.form_id)) == 2


async def test_two_purge_commands_at_once_take_each_response_once(
    own_db: Database, ring: KeyRing, fresh_database_url: str, tmp_path: Path
) -> None:
    intake = await clinic_form(own_db, 30)
    ids = await days_old(own_db, ring, intake, *(31 + i for i in range(40)))

    first, second = await asyncio.gather(
        asyncio.to_thread(purge, fresh_database_url, tmp_path / "a", "--batch-size", "3"),
        asyncio.to_thread(purge, fresh_database_url, tmp_path / "b", "--batch-size", "3"),
    )

    for result in (first, second):
        assert result.returncode == 0, result.stdout + result.stderr
    named = [
        i for e in await purge_events(own_db, intake.form_id) for i in detail(e)["responseIds"]
    ]
    assert sorted(named) == sorted(ids)
    assert await left_of(own_db, ids) == {kind: set() for kind in ALL_RECORDS}


async def test_a_form_that_cannot_be_purged_exits_1_and_keeps_its_responses(
    own_db: Database, ring: KeyRing, fresh_database_url: str, tmp_path: Path
) -> None:
    intake = await clinic_form(own_db, 30)
    ids = await days_old(own_db, ring, intake, 31)
    await refuse_purge_events(own_db)

    result = purge(fresh_database_url, tmp_path)

    assert result.returncode == 1
    assert f"error: form {intake.form_id}: stopped by " in result.stderr
    assert await left_of(own_db, ids) == {kind: set(ids) for kind in ALL_RECORDS}


def test_a_batch_size_out_of_bounds_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli(
        "purge", "--batch-size", "0", env=env_of(f"sqlite+aiosqlite:///{tmp_path}/x.db", tmp_path)
    )
    assert result.returncode == 2
