"""`audit verify --metrics-file`: the result as node_exporter's textfile collector reads
it, which the "audit chain check failing" alert (deploy/prometheus/alerts.yml) watches."""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from healthforms.audit.events import AuditEvent
from healthforms.audit.models import AuditEventRow
from healthforms.audit.store import append_event
from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from tests.audit.test_cli import cli_env
from tests.cli.test_config import run_cli


def _read(path: Path) -> dict[str, float]:
    return {
        s.name: s.value
        for family in text_string_to_metric_families(path.read_text())
        for s in family.samples
    }


async def test_verify_writes_ok_then_failing_for_node_exporter(
    db: Database, keys: KeyRing, fresh_database_url: str, tmp_path: Path
) -> None:
    for i in range(3):
        await append_event(
            db,
            keys,
            AuditEvent(action="form.updated", organization_id="org_m", resource_id=f"f{i}"),
        )
    prom = tmp_path / "textfile" / "healthforms_audit.prom"
    prom.parent.mkdir()
    started = time.time()
    intact = run_cli(
        "audit", "verify", "--metrics-file", str(prom), env=cli_env(fresh_database_url, tmp_path)
    )
    assert intact.returncode == 0, intact.stdout + intact.stderr
    figures = _read(prom)
    assert figures["healthforms_audit_verify_ok"] == 1
    assert figures["healthforms_audit_verify_events"] == 3
    assert figures["healthforms_audit_verify_last_run_timestamp_seconds"] >= int(started)

    async with db.sessions() as session, session.begin():
        await session.execute(
            update(AuditEventRow).where(AuditEventRow.seq == 2).values(action="form.created")
        )
    broken = run_cli(
        "audit", "verify", "--metrics-file", str(prom), env=cli_env(fresh_database_url, tmp_path)
    )
    assert broken.returncode == 1
    assert _read(prom)["healthforms_audit_verify_ok"] == 0
