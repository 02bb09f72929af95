"""Failure drills: two server processes under steady mixed load while Redis, one app
process or the database fails, then recovers.

Each drill checks: no response without a body; no 500 while the database is up; the
documented degraded behaviour (DESIGN.md: /health "degraded" without Redis, 503 without
the database); recovery without intervention; every submission the load generator saw
accepted (201) is in the database exactly once; `healthforms audit verify` passes.
Everything runs on a private Redis and a private database: nothing shared is stopped.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import legs, workflow
from tests.support.cluster import (
    Cluster,
    LoadRun,
    assert_accepted_exactly_once,
    assert_every_answer_had_a_body,
    assert_no_server_errors_outside,
    audit_verify,
    health_of,
    private_cluster,
    summary,
    wait_for,
)

pytestmark = [pytest.mark.chaos, pytest.mark.multiprocess, pytest.mark.timeout(170)]

LOAD_SECONDS = 26.0
SERVER_ERRORS = (500, 502, 503, 504)


def _bootstrapped(cluster: Cluster) -> Cluster:
    try:
        cluster.bootstrap()
    except workflow.FeatureMissing as exc:
        pytest.skip(f"needs a feature not merged on this branch yet: {exc}")
    return cluster


@contextmanager
def evidence(cluster: Cluster) -> Iterator[None]:
    """On a failed check, append what the servers logged (errors, 5xx, tracebacks)."""
    try:
        yield
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\n--- server log evidence ---\n{cluster.log_evidence()}"
        ) from None


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with private_cluster(tmp_path) as running:
        yield _bootstrapped(running)


def _serves_everything_again(cluster: Cluster) -> list[str]:
    """After recovery each server answers staff and patients as before the fault;
    return the confirmations of the submissions made to show it."""
    staff = cluster.staff[0]
    form = cluster.forms[0]
    confirmations = []
    for url in cluster.urls:
        me = httpx.get(f"{url}/api/auth/me", headers=staff.headers(), timeout=10)
        assert me.status_code == 200, (url, me.status_code, me.text[:200])
        confirmations.append(workflow.submit_once(url, form.public_id))
    return confirmations


def _check_afterwards(cluster: Cluster, result: dict[str, Any], later: list[str]) -> dict[str, int]:
    assert_every_answer_had_a_body(result)
    figures = assert_accepted_exactly_once(
        result, cluster.database_url, [form.id for form in cluster.forms], later
    )
    ok, report = audit_verify(cluster.env)
    assert ok, f"audit verify failed: {report}"
    assert "unhandled_exception" not in cluster.logs()
    return figures


def test_redis_killed_for_ten_seconds_degrades_then_recovers(
    cluster: Cluster, tmp_path: Path
) -> None:
    load = LoadRun(cluster.load_config(duration_s=LOAD_SECONDS), tmp_path / "load")
    time.sleep(5)
    cluster.redis.kill()
    killed_at = time.time()
    # Documented: /health stays 200 and says "degraded" while Redis is away.
    degraded = wait_for(
        lambda: all(health_of(url) == (200, "degraded") for url in cluster.urls), timeout_s=8
    )
    time.sleep(max(0.0, killed_at + 10 - time.time()))
    cluster.redis.restart()
    recovered = wait_for(
        lambda: all(health_of(url) == (200, "healthy") for url in cluster.urls), timeout_s=20
    )
    result = load.wait()
    with evidence(cluster):
        print(summary(result))
        assert degraded, "/health did not report degraded while Redis was down"
        assert recovered, "the servers did not report healthy again after Redis came back"
        # The database stayed up the whole time: no 5xx at all, Redis or not.
        assert_no_server_errors_outside(result, statuses=SERVER_ERRORS)
        during = [
            item for item in result["accepted"] if killed_at + 1 <= item["t"] <= killed_at + 9
        ]
        assert during, "no submission was accepted while Redis was down"
        later = _serves_everything_again(cluster)
        print(_check_afterwards(cluster, result, later))


def test_app_process_restarts_lose_nothing(cluster: Cluster, tmp_path: Path) -> None:
    load = LoadRun(cluster.load_config(duration_s=LOAD_SECONDS), tmp_path / "load")
    time.sleep(5)
    # A graceful restart (SIGTERM: in-flight requests finish), then a crash (SIGKILL).
    cluster.restart_server(1, kill=False)
    time.sleep(4)
    cluster.restart_server(0, kill=True)
    result = load.wait()
    with evidence(cluster):
        print(summary(result))
        assert_no_server_errors_outside(result, statuses=SERVER_ERRORS)
        for url in cluster.urls:
            assert health_of(url) == (200, "healthy")
        # Sessions live in Redis, so a restarted process still knows everyone signed in.
        later = _serves_everything_again(cluster)
        print(_check_afterwards(cluster, result, later))


@pytest.mark.skipif(not legs.database_is_postgres(), reason="the PostgreSQL leg's drill")
def test_postgres_stopped_for_seconds_answers_503_then_recovers(tmp_path: Path) -> None:
    from healthforms.db.migrate import upgrade
    from tests.support.private_pg import PrivatePostgres, PrivatePostgresUnavailable

    try:
        pg = PrivatePostgres.create()
    except PrivatePostgresUnavailable as exc:
        pytest.skip(f"cannot run a private PostgreSQL here: {exc}")
    try:
        url = pg.create_database("drill")
        upgrade(url)
        with private_cluster(tmp_path, database_url=url) as running:
            cluster = _bootstrapped(running)
            load = LoadRun(cluster.load_config(duration_s=LOAD_SECONDS), tmp_path / "load")
            time.sleep(5)
            stopped_at = time.time()
            pg.stop(mode="fast")
            unavailable = wait_for(
                lambda: all(health_of(url)[0] == 503 for url in cluster.urls), timeout_s=6
            )
            time.sleep(max(0.0, stopped_at + 5 - time.time()))
            pg.start()
            started_at = time.time()
            recovered = wait_for(
                lambda: all(health_of(url) == (200, "healthy") for url in cluster.urls),
                timeout_s=20,
            )
            result = load.wait()
            with evidence(cluster):
                print(summary(result))
                assert unavailable, "/health did not answer 503 while PostgreSQL was down"
                assert recovered, "the servers did not recover after PostgreSQL came back"
                # 5xx only while the database was away (plus the pool's reconnect grace).
                window = [(stopped_at, started_at + 3)]
                assert_no_server_errors_outside(result, window, statuses=SERVER_ERRORS)
                # A lost database is a retryable 503 (the edge middleware), never a 500.
                assert_no_server_errors_outside(result, statuses=(500,))
                down = [e for e in result["server_errors"] if e["status"] == 503]
                print(f"503s while the database was down: {len(down)}")
                later = _serves_everything_again(cluster)
                print(_check_afterwards(cluster, result, later))
    finally:
        pg.destroy()


@pytest.mark.skipif(legs.database_is_postgres(), reason="the SQLite leg's drill")
def test_sqlite_writer_lock_held_by_another_process_loses_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    """SQLite cannot be "stopped" under open connections; the failure it does have is
    another process holding the write lock. Writes queue (busy timeout), reads go on;
    nothing is lost or doubled and no 500 escapes. The 503 path is drilled on PostgreSQL."""
    import sqlite3

    from sqlalchemy.engine import make_url

    path = make_url(cluster.database_url).database
    assert path
    load = LoadRun(cluster.load_config(duration_s=LOAD_SECONDS), tmp_path / "load")
    time.sleep(5)
    blocker = sqlite3.connect(path, timeout=10, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        time.sleep(4)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    result = load.wait()
    with evidence(cluster):
        print(summary(result))
        assert_no_server_errors_outside(result, statuses=SERVER_ERRORS)
        later = _serves_everything_again(cluster)
        print(_check_afterwards(cluster, result, later))
