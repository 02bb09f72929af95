"""/metrics under `serve --workers 2`: one scrape counts every worker's requests.

prometheus_client's multiprocess mode (healthforms/metrics.py): each worker writes its
counters into a private directory `serve` makes fresh; a scrape, whichever worker
answers it, merges them all. Requests are sent on new connections so the kernel hands
them to both workers (checked per worker, from the files themselves).
"""

from __future__ import annotations

import glob
import os
import secrets
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.support import workflow
from tests.support.servers import ServerProcess, child_pids, start_server

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(120)]

ROUTE = "/api/auth/me"
BATCH = 40


def _requests_counted(text: str, route: str = ROUTE) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != "healthforms_http_requests":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("route") == route:
                total += sample.value
    return total


def _gauge_values(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        if family.name == name
        for sample in family.samples
    ]


def _per_worker(metrics_dir: Path, route: str = ROUTE) -> dict[int, float]:
    """Requests to `route` each worker (pid) recorded, read from its own file."""
    counted: dict[int, float] = {}
    for path in glob.glob(str(metrics_dir / "counter_*.db")):
        pid = int(Path(path).stem.rsplit("_", 1)[1])
        for metric in MultiProcessCollector.merge([path], accumulate=True):  # type: ignore[no-untyped-call]
            if metric.name != "healthforms_http_requests":
                continue
            for sample in metric.samples:
                if sample.name.endswith("_total") and sample.labels.get("route") == route:
                    counted[pid] = counted.get(pid, 0.0) + sample.value
    return counted


def _send(base_url: str, count: int) -> None:
    # No keep-alive: every request is a new connection, accepted by whichever worker.
    with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0), timeout=10) as client:
        for _ in range(count):
            assert client.get(f"{base_url}{ROUTE}").status_code == 401


def _scrape(server: ServerProcess) -> str:
    response = httpx.get(f"{server.base_url}/metrics", timeout=10)
    assert response.status_code == 200
    return response.text


def test_one_scrape_counts_the_requests_of_every_worker(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    env = workflow.server_env(
        database_url=database_url,
        redis_url=redis_url,
        data_dir=tmp_path / "data",
        extra={"HEALTHFORMS_REDIS_PREFIX": f"hf-metrics-{secrets.token_hex(3)}:"},
    )
    stale = None
    server = start_server(env, tmp_path / "logs", workers=2)
    try:
        name = f"serve-{socket.gethostname()}-{server.port}"
        metrics_dir = tmp_path / "data" / "metrics" / name
        assert metrics_dir.is_dir()
        assert oct(metrics_dir.stat().st_mode & 0o777) == oct(0o700)
        sent = 0
        # Until both workers have served some (the kernel's choice): bounded.
        for _ in range(10):
            _send(server.base_url, BATCH)
            sent += BATCH
            if len([n for n in _per_worker(metrics_dir).values() if n > 0]) >= 2:
                break
        per_worker = _per_worker(metrics_dir)
        print(f"{sent} requests over workers: {per_worker}")
        assert len([n for n in per_worker.values() if n > 0]) >= 2, per_worker
        # Every scrape, whichever worker answers it, sees all of them.
        scrapes = [_requests_counted(_scrape(server)) for _ in range(6)]
        assert scrapes == [sent] * 6, scrapes
        text = _scrape(server)
        (up,) = _gauge_values(text, "healthforms_redis_up")
        assert up[1] == 1.0
        assert {labels["state"] for labels, _ in _gauge_values(
            text, "healthforms_redis_pool_connections")} == {"total", "idle", "in_use"}  # fmt: skip

        # A worker killed outright: uvicorn starts another; its counts stay in the
        # sum, its live gauges go at the next scrape.
        workers = set(child_pids(server.process.pid)) & set(per_worker)
        stale = next(iter(workers))
        os.kill(stale, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            alive = child_pids(server.process.pid)
            if stale not in alive and len(alive) >= 2:
                try:
                    if httpx.get(f"{server.base_url}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)
        # /health itself is counted; the route under test is not touched since.
        scrapes = [_requests_counted(_scrape(server)) for _ in range(6)]
        assert scrapes == [sent] * 6, scrapes
        live_pids = {
            int(Path(path).stem.rsplit("_", 1)[1])
            for path in glob.glob(str(metrics_dir / "gauge_live*_*.db"))
        }
        assert stale not in live_pids, "the killed worker's live gauges are still merged"
    finally:
        server.stop()
    log = server.log_text()
    assert "Traceback" not in log, log[-3000:]


def test_a_single_worker_keeps_the_in_process_registry(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    env = workflow.server_env(
        database_url=database_url,
        redis_url=redis_url,
        data_dir=tmp_path / "data",
        extra={"HEALTHFORMS_REDIS_PREFIX": f"hf-metrics-{secrets.token_hex(3)}:"},
    )
    server = start_server(env, tmp_path / "logs", workers=1)
    try:
        _send(server.base_url, 5)
        text = _scrape(server)
    finally:
        server.stop()
    assert _requests_counted(text) == 5
    assert not (tmp_path / "data" / "metrics").exists()
    # The live collector, not the published gauges: the pipeline figures are there.
    assert _gauge_values(text, "healthforms_redis_up")[0][1] == 1.0


def test_a_killed_worker_not_yet_reaped_counts_as_dead() -> None:
    """Signal 0 still reaches a zombie: the live-gauge sweep must read /proc's state, or a
    SIGKILLed worker's gauges stay merged until uvicorn's supervisor reaps it."""
    import subprocess
    import sys

    from healthforms.metrics import _process_alive

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert _process_alive(child.pid)
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while child.pid not in _zombies() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert child.pid in _zombies(), "the killed child should wait as a zombie, unreaped"
        os.kill(child.pid, 0)  # the trap: a zombie still takes signal 0
        assert not _process_alive(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not _process_alive(child.pid)


def _zombies() -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if stat[stat.rindex(")") + 2 :].split()[0] == "Z":
                found.add(int(entry.name))
    return found
