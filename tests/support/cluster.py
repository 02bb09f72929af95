"""Two real server processes on a private Redis and a database of their own, set up
through the public contract, plus the checks every failure drill makes afterwards.

Used by tests/chaos (drills and soak). Private means destructible: the drills kill
this Redis, stop this database and restart these servers; nothing shared is touched.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from healthforms.redis.embedded import EmbeddedRedis, free_port
from tests.support import legs, workflow
from tests.support.servers import REPO_ROOT, ServerProcess, start_server


@dataclass
class Cluster:
    env: dict[str, str]
    redis: EmbeddedRedis
    database_url: str
    servers: list[ServerProcess]
    log_dir: Path
    admin: workflow.StaffSession | None = None
    forms: list[workflow.PublishedForm] = field(default_factory=list)
    staff: list[workflow.StaffSession] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [server.base_url for server in self.servers]

    def bootstrap(self, *, forms: int = 2, staff: int = 3) -> None:
        """An admin, `staff` signed-in sessions and `forms` published forms."""
        email = f"admin-{secrets.token_hex(3)}@drill.example"
        workflow.create_admin(self.env, email)
        self.admin = workflow.login(self.urls[0], email)
        self.staff = [self.admin]
        for index in range(staff - 1):
            self.staff.append(workflow.login(self.urls[(index + 1) % len(self.urls)], email))
        for index in range(forms):
            self.forms.append(workflow.publish_form(self.urls[0], self.admin, f"Drill {index}"))

    def restart_server(self, index: int, *, kill: bool = True) -> None:
        """SIGKILL (or stop) one server and start a fresh process on the same port."""
        old = self.servers[index]
        if kill:
            old.process.kill()
            old.process.wait(timeout=10)
        else:
            old.stop()
        self.servers[index] = start_server(self.env, self.log_dir, port=old.port)

    def logs(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in self.log_dir.glob("*.log"))

    def log_evidence(self, limit: int = 4000) -> str:
        """Error-level lines, 5xx request lines and tracebacks from every server log."""
        keep: list[str] = []
        lines = self.logs().splitlines()
        for index, line in enumerate(lines):
            if '"level": "error"' in line or '"status": 500' in line:
                keep.append(line[:400])
            elif line.startswith("Traceback"):
                keep.extend(lines[index : index + 40])
        text = "\n".join(keep)
        return text if len(text) <= limit else text[: limit // 2] + "\n...\n" + text[-limit // 2 :]

    def load_config(self, **overrides: Any) -> dict[str, Any]:
        config: dict[str, Any] = {
            "servers": self.urls,
            "duration_s": 20.0,
            "max_requests": 20_000,
            "concurrency": 8,
            "rate_per_s": 80.0,
            "public_ids": [form.public_id for form in self.forms],
            "answers": workflow.DRILL_ANSWERS,
            "sessions": [{"cookie": s.cookie_header, "csrf": s.csrf_token} for s in self.staff],
        }
        config.update(overrides)
        return config


@contextmanager
def private_cluster(
    tmp_path: Path,
    *,
    database_url: str | None = None,
    servers: int = 2,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[Cluster]:
    """A private Redis of the leg's kind (append-only, so a restart keeps sessions),
    the leg's database (or `database_url`), and `servers` app processes."""
    own_database = database_url is None
    db_url = database_url or legs.create_database(tmp_path / "db")
    redis = EmbeddedRedis.start(
        tmp_path / "redis", binary=legs.private_server_binary(), port=free_port()
    )
    env = workflow.server_env(
        database_url=db_url, redis_url=redis.url, data_dir=tmp_path / "data", extra=extra_env
    )
    started: list[ServerProcess] = []
    try:
        for _ in range(servers):
            started.append(start_server(env, tmp_path / "logs"))
        yield Cluster(
            env=env, redis=redis, database_url=db_url, servers=started, log_dir=tmp_path / "logs"
        )
    finally:
        for server in started:
            server.stop()
        redis.stop()
        if own_database:
            legs.drop_database(db_url)


class LoadRun:
    """The load generator as a child process (pinned to the last core when possible)."""

    def __init__(self, config: Mapping[str, Any], workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / f"load-{secrets.token_hex(3)}.json"
        self.result_path = self.config_path.with_suffix(".result.json")
        self.config_path.write_text(json.dumps(config))
        self.duration_s = float(config["duration_s"])
        self.log_path = self.config_path.with_suffix(".log")
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.support.loadgen", str(self.config_path),
                 str(self.result_path)],
                cwd=str(REPO_ROOT),
                env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.started = time.time()

    def wait(self) -> dict[str, Any]:
        try:
            self.process.wait(timeout=self.duration_s + 60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            raise AssertionError("load generator overran its bound") from None
        if self.process.returncode != 0:
            raise AssertionError(
                f"load generator failed: {self.log_path.read_text(errors='replace')[-2000:]}"
            )
        result: dict[str, Any] = json.loads(self.result_path.read_text())
        return result


def wait_for(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return False


def health_of(url: str) -> tuple[int, str | None]:
    try:
        response = httpx.get(f"{url}/health", timeout=3.0)
    except httpx.TransportError:
        return 0, None
    try:
        return response.status_code, response.json().get("status")
    except ValueError:
        return response.status_code, None


# Checks ------------------------------------------------------------------------------------


def stored_submissions(database_url: str, form_ids: list[str]) -> Counter[str]:
    """confirmation -> how many response rows carry it, for these forms."""
    from sqlalchemy import bindparam, text

    from healthforms.db.engine import Database

    async def query() -> Counter[str]:
        db = Database.connect(database_url)
        try:
            async with db.sessions() as session:
                statement = text(
                    "SELECT confirmation, count(*) FROM responses WHERE form_id IN :ids "
                    "GROUP BY confirmation"
                ).bindparams(bindparam("ids", expanding=True))
                rows = (await session.execute(statement, {"ids": form_ids})).all()
        finally:
            await db.dispose()
        return Counter({str(row[0]): int(row[1]) for row in rows})

    return asyncio.run(query())


def audit_verify(env: Mapping[str, str]) -> tuple[bool, str]:
    """`healthforms audit verify` against the cluster's database and checkpoints."""
    result = workflow.cli(env, "audit", "verify")
    return result.returncode == 0, (result.stdout + result.stderr).strip()[-500:]


def assert_every_answer_had_a_body(result: Mapping[str, Any]) -> None:
    assert not result["bodiless"], f"responses without a body: {result['bodiless'][:5]}"


def assert_no_server_errors_outside(
    result: Mapping[str, Any],
    windows: Sequence[tuple[float, float]] = (),
    statuses: tuple[int, ...] = (500,),
) -> None:
    """No 5xx of `statuses` except inside the given [start, end] wall-clock windows."""
    bad = [
        error
        for error in result["server_errors"]
        if error["status"] in statuses
        and not any(start <= error["t"] <= end for start, end in windows)
    ]
    assert not bad, f"{len(bad)} server errors outside fault windows: {bad[:5]}"


def assert_accepted_exactly_once(
    result: Mapping[str, Any],
    database_url: str,
    forms: list[str],
    later: Sequence[str] = (),
) -> dict[str, int]:
    """Every 201/200 the load generator got is stored exactly once; return the figures.

    `later`: confirmations of submissions made after the load (each stored once too)."""
    accepted = result["accepted"]
    created = [item for item in accepted if item["status"] == 201]
    assert created, f"no submission was accepted: {result['counts']}"
    confirmations_201 = [item["confirmation"] for item in created] + list(later)
    # One nonce, one 201: a second 201 for the same submission would be a double store.
    assert len(set(confirmations_201)) == len(confirmations_201), "a confirmation was 201 twice"
    by_nonce: dict[str, set[str]] = {}
    for item in accepted:
        by_nonce.setdefault(item["nonce"], set()).add(item["confirmation"])
    assert all(len(codes) == 1 for codes in by_nonce.values()), "a nonce got two confirmations"
    stored = stored_submissions(database_url, forms)
    missing = [code for code in confirmations_201 if stored.get(code, 0) == 0]
    doubled = {code: count for code, count in stored.items() if count > 1}
    assert not missing, f"{len(missing)} accepted submissions are not in the database"
    assert not doubled, f"submissions stored more than once: {doubled}"
    rejected = result["rejected_submissions"]
    assert not rejected, f"{len(rejected)} submissions refused, e.g. {rejected[:3]}"
    attempted = len(by_nonce) + len(result["unknown_submissions"]) + len(later)
    total = sum(stored.values())
    # Rows beyond the confirmed ones may only come from submissions whose reply was lost.
    assert total <= attempted, f"{total} rows for {attempted} submitted nonces"
    return {
        "accepted_201": len(created),
        "replayed_200": len(accepted) - len(created),
        "stored_rows": total,
        "unknown_outcome": len(result["unknown_submissions"]),
        "rejected": len(result["rejected_submissions"]),
    }


def summary(result: Mapping[str, Any]) -> str:
    counts = ", ".join(f"{k}={v}" for k, v in sorted(result["counts"].items()))
    return f"{result['requests']} requests in {result['ended'] - result['started']:.1f}s: {counts}"
