"""`healthforms audit verify | export` against a real database."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, update

from healthforms.audit.events import AuditEvent
from healthforms.audit.models import AuditEventRow
from healthforms.audit.store import append_event, chain_hash
from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from tests.cli.test_config import run_cli
from tests.conftest import TEST_ENCRYPTION_KEY


@pytest.fixture
async def db(db: Database, keys: KeyRing) -> Database:
    for i in range(5):
        await append_event(
            db,
            keys,
            AuditEvent(action="form.updated", organization_id="org_x", resource_id=f"f{i}"),
        )
    return db


def cli_env(url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "DATABASE_URL": url,
        "HEALTHFORMS_DATA_DIR": str(tmp_path),
        "HEALTHFORMS_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
    }


async def test_verify_passes_on_an_intact_chain(
    db: Database, fresh_database_url: str, tmp_path: Path
) -> None:
    result = run_cli("audit", "verify", env=cli_env(fresh_database_url, tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 events in 1 chains" in result.stdout and "intact" in result.stdout
    assert "no checkpoints" in result.stdout  # said, not silently passed over


async def test_verify_names_the_altered_event(
    db: Database, fresh_database_url: str, tmp_path: Path
) -> None:
    async with db.sessions() as session, session.begin():
        await session.execute(
            update(AuditEventRow).where(AuditEventRow.id == 2).values(action="form.created")
        )
    result = run_cli("audit", "verify", env=cli_env(fresh_database_url, tmp_path))
    assert result.returncode != 0
    assert "chain org_x event 2" in result.stdout and "altered" in result.stdout


async def test_verify_names_the_removed_event(
    db: Database, fresh_database_url: str, tmp_path: Path
) -> None:
    async with db.sessions() as session, session.begin():
        await session.execute(delete(AuditEventRow).where(AuditEventRow.id == 3))
    result = run_cli("audit", "verify", env=cli_env(fresh_database_url, tmp_path))
    assert result.returncode != 0
    assert "chain org_x event 3: event(s) 3 missing" in result.stdout


async def test_export_prints_json_lines_since_a_time(
    db: Database, keys: KeyRing, fresh_database_url: str, tmp_path: Path
) -> None:
    everything = run_cli("audit", "export", env=cli_env(fresh_database_url, tmp_path))
    assert everything.returncode == 0, everything.stderr
    lines = [json.loads(line) for line in everything.stdout.splitlines()]
    assert [int(line["id"]) for line in lines] == [1, 2, 3, 4, 5]
    assert lines[0]["organizationId"] == "org_x" and lines[0]["action"] == "form.updated"
    assert lines[1]["prevHash"] == lines[0]["hash"]
    # The exported fields are enough to recompute each hash.
    rebuilt = AuditEventRow(
        id=int(lines[2]["id"]),
        chain=lines[2]["chain"],
        seq=lines[2]["seq"],
        key_id=lines[2]["keyId"],
        client_request_id=lines[2]["clientRequestId"],
        at=datetime.fromisoformat(lines[2]["at"]),
        organization_id=lines[2]["organizationId"],
        actor_id=lines[2]["actorId"],
        action=lines[2]["action"],
        resource_type=lines[2]["resourceType"],
        resource_id=lines[2]["resourceId"],
        outcome=lines[2]["outcome"],
        ip=lines[2]["ip"],
        user_agent=lines[2]["userAgent"],
        request_id=lines[2]["requestId"],
        prev_hash=lines[2]["prevHash"],
    )
    assert chain_hash(rebuilt, keys.hmac_key("audit-chain")) == lines[2]["hash"]

    future = (datetime.now(UTC) + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    later = run_cli("audit", "export", "--since", future, env=cli_env(fresh_database_url, tmp_path))
    assert later.returncode == 0 and later.stdout == ""
    await append_event(db, keys, AuditEvent(action="pdf.served", organization_id="org_x"))
    cut = lines[-1]["at"]
    recent = run_cli("audit", "export", "--since", cut, env=cli_env(fresh_database_url, tmp_path))
    recent_lines = [json.loads(line) for line in recent.stdout.splitlines()]
    assert [line["action"] for line in recent_lines][-1] == "pdf.served"
    assert all(int(line["id"]) >= 5 for line in recent_lines)


def test_export_rejects_a_malformed_since(fresh_database_url: str, tmp_path: Path) -> None:
    result = run_cli(
        "audit", "export", "--since", "last tuesday", env=cli_env(fresh_database_url, tmp_path)
    )
    assert result.returncode == 2
    assert "--since" in result.stderr and "Traceback" not in result.stderr


async def test_checkpoint_then_cut_the_newest_events_fails_verify(
    db: Database, fresh_database_url: str, tmp_path: Path
) -> None:
    env = cli_env(fresh_database_url, tmp_path)
    written = run_cli("audit", "checkpoint", env=env)
    assert written.returncode == 0, written.stderr
    assert "1 chain head(s) checkpointed" in written.stdout
    assert (tmp_path / "audit-checkpoints.jsonl").exists()
    ok = run_cli("audit", "verify", env=env)
    assert ok.returncode == 0 and "1 checkpoints matched" in ok.stdout, ok.stdout
    async with db.sessions() as session, session.begin():
        await session.execute(delete(AuditEventRow).where(AuditEventRow.seq >= 4))
    cut = run_cli("audit", "verify", env=env)
    assert cut.returncode == 1
    assert "chain org_x event 4: event(s) 4-5 missing: removed after the checkpoint" in cut.stdout


async def test_verify_reports_a_tampered_checkpoint_file(
    db: Database, fresh_database_url: str, tmp_path: Path
) -> None:
    env = cli_env(fresh_database_url, tmp_path)
    assert run_cli("audit", "checkpoint", env=env).returncode == 0
    path = tmp_path / "audit-checkpoints.jsonl"
    path.write_text(path.read_text().replace('"seq":5', '"seq":4'))
    result = run_cli("audit", "verify", "--checkpoints", str(path), env=env)
    assert result.returncode == 1
    assert "line 1: signature invalid" in result.stdout
