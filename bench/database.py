"""Database paths beside a typical CRUD app on the same database (SQLite and PostgreSQL).

For each database (BENCH_DATABASES, default `sqlite,postgresql`; PostgreSQL from
BENCH_POSTGRES_URL, a fresh database per run, dropped at the end):

- the reference: bench/peers/crud_app.py (FastAPI + SQLAlchemy 2 async ORM, no
  security): GET one JSON row by id @50, INSERT one posted JSON row @20 and @50;
- ours (`healthforms serve`, one process, rate limits out of the way): public fetch +
  submit @20 (nonce, validation, AES-GCM, response row, audit event, commit; the rate
  is of submissions, each one fetch + one POST), GET /api/forms/{id}, GET
  /api/responses/{id} (a PHI read with its audit event) and GET /api/forms @50, PUT
  /api/forms/{id} and POST /api/forms/{id}/lock @50 over 50 forms in turn.

wrk -t1 on the load core, each app alone on the app core (bench/harness.py). Each run
also checks what it wrote: submissions accepted (201s counted by wrk) against response
rows, PUTs answered 200 against revisions gained (a lost update would gain fewer).
Targets (issue 13) are judged on ratios inside one run.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url

from bench import harness
from bench.harness import LoadResult, Server
from healthforms.redis.embedded import EmbeddedRedis, free_port
from tests.support.legs import pg_admin

SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
DATABASES = [
    name.strip()
    for name in os.environ.get("BENCH_DATABASES", "sqlite,postgresql").split(",")
    if name.strip()
]
POSTGRES_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
EDITED_FORMS = 50
PROFILE_SECONDS = float(os.environ.get("BENCH_PROFILE_SECONDS", "8"))
# A posted row about the size of a small intake's answers.
CRUD_ROW = {"full_name": "Test Patient", "reason": "Routine check", "consent": True}

TARGET_SUBMIT_VS_INSERT = 0.5
TARGET_SUBMIT_P99_MS = 100.0
TARGET_GET_VS_GET = 2.0
TARGET_GET_P99_VS_GET = 0.5
TARGET_WRITE_VS_INSERT = 0.5


async def _pg_admin(sql: str) -> None:
    await pg_admin(POSTGRES_URL, sql)


class Databases:
    """Fresh databases for one run; PostgreSQL ones are dropped at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.created: list[str] = []

    def fresh(self, backend: str, label: str) -> str:
        if backend == "sqlite":
            return f"sqlite+aiosqlite:///{self.workdir / f'{label}.db'}"
        name = f"hf_bench_{label}_{secrets.token_hex(4)}"
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        for name in self.created:
            try:
                asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            except Exception as exc:  # noqa: BLE001 - report, keep dropping the others
                print(f"  could not drop {name}: {exc}", flush=True)


def count_rows(url: str, sql: str) -> int:
    """One scalar from the database the run wrote (plain drivers, outside the apps)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        with sqlite3.connect(str(parsed.database)) as conn:
            return int(conn.execute(sql).fetchone()[0])

    async def query() -> int:
        import asyncpg

        conn = await asyncpg.connect(
            parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        )
        try:
            return int(await conn.fetchval(sql))
        finally:
            await conn.close()

    return asyncio.run(query())


class Run:
    """Rows and checks of one bench run, printed as they come."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.checks: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.profiles: dict[str, Any] = {}

    def measure(
        self,
        name: str,
        group: str,
        role: str,
        server: Server,
        env: dict[str, str],
        *,
        connections: int,
        script: str = "request.lua",
        per_op: int = 1,
    ) -> LoadResult:
        """One wrk run; `per_op` requests make one operation (fetch + submit = 2)."""
        cpu_before = harness.cpu_seconds(server.process.pid)
        result = harness.wrk(
            server.url, connections=connections, seconds=SECONDS, script=script, env=env
        )
        cpu = harness.cpu_seconds(server.process.pid) - cpu_before
        operations = result.requests / per_op
        row = {
            "name": f"{name} @{connections}",
            "group": group,
            "role": role,
            "ops_per_s": round(operations / result.seconds, 1) if result.seconds else 0.0,
            "p50_ms": result.p50_ms,
            "p99_ms": result.p99_ms,
            "errors": result.errors,
            "counts": result.counts,
            "cpu_us_per_req": round(cpu * 1e6 / operations, 1) if operations else None,
        }
        self.rows.append(row)
        print(
            f"  {row['name']:<52} {row['ops_per_s']:>8.1f}/s  p50 {result.p50_ms:>7.2f} ms"
            f"  p99 {result.p99_ms:>8.2f} ms  cpu {row['cpu_us_per_req']} us/op"
            f"  {result.counts or ''} {result.errors or ''}",
            flush=True,
        )
        return result

    def check(self, name: str, value: Any, target: str, ok: bool) -> None:
        self.checks.append({"name": name, "value": value, "target": target, "ok": ok})
        print(f"  check {name:<60} {value!s:>10}  {target}  {'ok' if ok else 'FAILED'}")


def _quiet(server: Server, timeout_s: float = 30.0) -> None:
    """Let requests still in flight after wrk stopped finish before counting rows."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(server.url + "/health", timeout=5).status_code < 500:
                time.sleep(0.5)
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)


def bench_crud(run: Run, backend: str, url: str, workdir: Path) -> None:
    port = free_port()
    server = harness.launch(
        f"crud-{backend}",
        harness.uvicorn_argv("bench.peers.crud_app:create_app", port),
        {"BENCH_DATABASE_URL": url},
        workdir / "logs",
        port=port,
        ready_path="/items/none",
    )
    try:
        created = httpx.post(f"{server.url}/items", json=CRUD_ROW, timeout=10)
        created.raise_for_status()
        item_id = created.json()["id"]
        group = f"{backend}"
        run.measure(
            f"{backend} CRUD GET /items/{{id}}", f"{group} read", "peer", server,
            harness.request_env("GET", f"/items/{item_id}"), connections=50,
        )  # fmt: skip
        for connections in (20, 50):
            run.measure(
                f"{backend} CRUD INSERT /items", f"{group} write", "peer", server,
                harness.request_env("POST", "/items", body=json.dumps(CRUD_ROW)),
                connections=connections,
            )  # fmt: skip
    finally:
        server.stop()


def bench_ours(run: Run, backend: str, url: str, workdir: Path, redis_url: str) -> None:
    from healthforms.db.migrate import upgrade
    from tests.support import workflow

    upgrade(url)
    env = workflow.server_env(
        database_url=url,
        redis_url=redis_url,
        data_dir=workdir / f"data-{backend}",
        extra={"HEALTHFORMS_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "info")},
    )
    port = free_port()
    ours = harness.launch(
        f"ours-{backend}",
        [sys.executable, "-m", "healthforms", "serve", "--port", str(port)],
        env,
        workdir / "logs",
        port=port,
    )
    try:
        workflow.create_admin(env, f"bench-{backend}@bench.example", organization="Bench Clinic")
        staff = workflow.login(ours.url, f"bench-{backend}@bench.example")
        auth = staff.headers()
        unsafe = staff.headers(unsafe=True)
        form = workflow.publish_form(ours.url, staff, "Bench intake")
        workflow.submit_once(ours.url, form.public_id)
        response_id = workflow.first_response_id(ours.url, staff, form.id)
        # The list as the issue measured it (one form), before the 50 drafts below.
        run.measure(
            f"{backend} ours GET /api/forms", f"{backend} read", "ours", ours,
            harness.request_env("GET", "/api/forms", headers=auth), connections=50,
        )  # fmt: skip
        with httpx.Client(base_url=ours.url, timeout=30) as http:
            edited = []
            for index in range(EDITED_FORMS):
                made = http.post(
                    "/api/forms",
                    json={"title": f"Draft {index}", "fields": workflow.DRILL_FIELDS},
                    headers=unsafe,
                )
                made.raise_for_status()
                edited.append(made.json()["id"])

        rows_before = count_rows(url, "select count(*) from responses")
        submit = run.measure(
            f"{backend} ours public fetch+submit", f"{backend} write", "ours", ours,
            {"WRK_PUBLIC_ID": form.public_id, "WRK_ANSWERS": json.dumps(workflow.DRILL_ANSWERS)},
            connections=20, script="submit.lua", per_op=2,
        )  # fmt: skip
        _quiet(ours)
        stored = count_rows(url, "select count(*) from responses") - rows_before
        accepted = submit.counts.get("accepted", 0)
        run.check(
            f"{backend} submissions: non-2xx answers",
            submit.counts.get("refused", 0) + submit.error_count, "== 0",
            submit.counts.get("refused", 0) + submit.error_count == 0,
        )  # fmt: skip
        # wrk stops counting at its deadline; up to one request per connection is then
        # still in flight and may be stored after it.
        run.check(
            f"{backend} submissions: rows stored - 201s counted", stored - accepted,
            "0..20 (in flight at the deadline)", 0 <= stored - accepted <= 20,
        )  # fmt: skip

        run.measure(
            f"{backend} ours GET /api/forms/{{id}}", f"{backend} read", "ours", ours,
            harness.request_env("GET", f"/api/forms/{form.id}", headers=auth), connections=50,
        )  # fmt: skip
        run.measure(
            f"{backend} ours GET /api/responses/{{id}}", f"{backend} read", "ours", ours,
            harness.request_env("GET", f"/api/responses/{response_id}", headers=auth),
            connections=50,
        )  # fmt: skip
        run.measure(
            f"{backend} ours GET /api/forms (51 forms)", f"{backend} list", "info", ours,
            harness.request_env("GET", "/api/forms", headers=auth), connections=50,
        )  # fmt: skip

        revisions_before = count_rows(url, "select sum(revision) from forms")
        body = json.dumps({"title": "Draft (edited)", "fields": workflow.DRILL_FIELDS})
        paths = "\n".join(f"/api/forms/{form_id}" for form_id in edited)
        put = run.measure(
            f"{backend} ours PUT /api/forms/{{id}}", f"{backend} write", "ours", ours,
            {**harness.request_env("PUT", "/", body=body, headers=unsafe), "WRK_PATHS": paths},
            connections=50, script="rotate.lua",
        )  # fmt: skip
        _quiet(ours)
        gained = count_rows(url, "select sum(revision) from forms") - revisions_before
        saved = put.counts.get("2xx", 0)
        # wrk's "status" errors are every non-2xx answer, 409s included: counted apart.
        failed = put.counts.get("5xx", 0) + put.error_count - put.errors.get("status", 0)
        run.check(f"{backend} PUT: 5xx answers and transport errors", failed, "== 0", failed == 0)
        run.check(
            f"{backend} PUT: revisions gained - 200s counted", gained - saved,
            "0..50 (none lost)", 0 <= gained - saved <= 50,
        )  # fmt: skip
        lock_paths = "\n".join(f"/api/forms/{form_id}/lock" for form_id in edited)
        lock = run.measure(
            f"{backend} ours POST /api/forms/{{id}}/lock", f"{backend} write", "ours", ours,
            {**harness.request_env("POST", "/", headers=unsafe), "WRK_PATHS": lock_paths},
            connections=50, script="rotate.lua",
        )  # fmt: skip
        run.check(
            f"{backend} lock: non-2xx answers", lock.error_count, "== 0", lock.error_count == 0
        )
        if PROFILE_SECONDS > 0:
            from bench.http import profile

            print(f"== profile: py-spy on ours ({backend}), public fetch+submit @20", flush=True)
            run.profiles[f"{backend} public fetch+submit"] = found = profile(
                ours, ours.url,
                {"WRK_PUBLIC_ID": form.public_id,
                 "WRK_ANSWERS": json.dumps(workflow.DRILL_ANSWERS)},
                PROFILE_SECONDS, name=f"submit-{backend}", script="submit.lua", connections=20,
            )  # fmt: skip
            print(json.dumps(found, indent=1)[:2500], flush=True)
    finally:
        ours.stop()


def _row(run: Run, name: str) -> dict[str, Any] | None:
    return next((row for row in run.rows if row["name"] == name), None)


def targets(run: Run, backend: str) -> list[dict[str, Any]]:
    """Issue 13's targets for one database, from this run's rows."""
    out: list[dict[str, Any]] = []
    crud_get = _row(run, f"{backend} CRUD GET /items/{{id}} @50")
    insert_20 = _row(run, f"{backend} CRUD INSERT /items @20")
    insert_50 = _row(run, f"{backend} CRUD INSERT /items @50")

    def ratio(name: str, value: float, target: str, ok: bool) -> None:
        out.append({"name": name, "value": round(value, 2), "target": target, "ok": ok})

    submit = _row(run, f"{backend} ours public fetch+submit @20")
    if submit and insert_20:
        value = submit["ops_per_s"] / insert_20["ops_per_s"]
        ratio(f"{backend} submit / CRUD INSERT @20", value,
              f">= {TARGET_SUBMIT_VS_INSERT}", value >= TARGET_SUBMIT_VS_INSERT)  # fmt: skip
        ratio(f"{backend} submit p99 ms @20", submit["p99_ms"],
              f"<= {TARGET_SUBMIT_P99_MS:g}", submit["p99_ms"] <= TARGET_SUBMIT_P99_MS)  # fmt: skip
    for path in ("/api/forms/{id}", "/api/responses/{id}", "/api/forms"):
        ours = _row(run, f"{backend} ours GET {path} @50")
        if ours and crud_get:
            value = ours["ops_per_s"] / crud_get["ops_per_s"]
            ratio(f"{backend} GET {path} / CRUD GET @50", value,
                  f">= {TARGET_GET_VS_GET}", value >= TARGET_GET_VS_GET)  # fmt: skip
            p99 = ours["p99_ms"] / crud_get["p99_ms"] if crud_get["p99_ms"] else 0.0
            ratio(f"{backend} GET {path} p99 / CRUD GET p99 @50", p99,
                  f"<= {TARGET_GET_P99_VS_GET}", p99 <= TARGET_GET_P99_VS_GET)  # fmt: skip
    for label, name in (("PUT", "PUT /api/forms/{id}"), ("lock", "POST /api/forms/{id}/lock")):
        ours = _row(run, f"{backend} ours {name} @50")
        if ours and insert_50:
            value = ours["ops_per_s"] / insert_50["ops_per_s"]
            ratio(f"{backend} {label} / CRUD INSERT @50", value,
                  f">= {TARGET_WRITE_VS_INSERT}", value >= TARGET_WRITE_VS_INSERT)  # fmt: skip
    return out


def run() -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="hf-bench-db-"))
    databases = Databases(workdir)
    redis_server = EmbeddedRedis.start(
        workdir / "redis", binary=shutil.which("redis-server"), appendonly=False, port=free_port()
    )
    subprocess.run(
        ["taskset", "-cp", harness.LOAD_CORE, str(redis_server.process.pid)],
        capture_output=True,
        check=False,
    )
    bench_run = Run()
    ratios: list[dict[str, Any]] = []
    try:
        for backend in DATABASES:
            print(f"== {backend}: typical CRUD app, then ours (wrk -t1 on core 1)", flush=True)
            try:
                bench_crud(bench_run, backend, databases.fresh(backend, "crud"), workdir)
                bench_ours(
                    bench_run, backend, databases.fresh(backend, "ours"), workdir, redis_server.url
                )
            except Exception as exc:  # noqa: BLE001 - one database failing still reports the other
                bench_run.notes.append(f"{backend}: {type(exc).__name__}: {str(exc)[:300]}")
                print(f"  {backend} FAILED: {exc}", flush=True)
            ratios.extend(targets(bench_run, backend))
    finally:
        redis_server.stop()
        databases.drop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    ratios.extend(bench_run.checks)
    print("== targets (issue 13)")
    for ratio in ratios:
        verdict = "ok" if ratio["ok"] else "MISSED"
        print(f"  {ratio['name']:<60} {ratio['value']!s:>8}  {ratio['target']:<32} {verdict}")
    result: dict[str, Any] = {
        "module": "database",
        "rows": bench_run.rows,
        "ratios": ratios,
        "notes": bench_run.notes,
        "profiles": bench_run.profiles,
        "config": {"seconds": SECONDS, "databases": DATABASES},
    }
    if bench_run.notes:
        result["error"] = "; ".join(bench_run.notes)[:500]
    return result


if __name__ == "__main__":
    print(json.dumps(run(), default=str))
