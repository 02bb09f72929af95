"""Three `healthforms serve` processes behind Debian's HAProxy (TLS terminated there), on
deploy/haproxy/haproxy.cfg as is, under steady mixed load from a client that speaks
only to HAProxy (tests/support/loadgen.py over HTTPS, no retries of its own but a
patient's resend of a submission).

- An instance SIGKILLed mid-load: HAProxy retries what was in flight there (reads and
  nonce-carrying submissions, on another instance) and takes it out; no client sees
  an error; every accepted submission is stored exactly once; sessions keep working
  (they live in Redis); the instance restarted is taken back by the health checks.
- A rolling restart, one instance at a time (drained through HAProxy's runtime API,
  then SIGTERM, start, ready): zero failed requests.
- The service believes HAProxy (HEALTHFORMS_TRUSTED_PROXIES): the client's address
  comes from X-Forwarded-For, the scheme (https) from X-Forwarded-Proto.

Figures are printed (-s): requests, what the client saw, what HAProxy retried, how
long an instance took to be taken out and back. HEALTHFORMS_SOAK=1 runs minutes of
load with a kill and a rolling restart of every instance in turn.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import workflow
from tests.support.balancer import Balancer, haproxy_binary, running_balancer
from tests.support.cluster import (
    Cluster,
    LoadRun,
    assert_accepted_exactly_once,
    assert_every_answer_had_a_body,
    audit_verify,
    private_cluster,
    summary,
)
from tests.support.servers import start_server

SOAK = os.environ.get("HEALTHFORMS_SOAK") == "1"
# Upper bounds: the load stops 2 s after the drill's last step (a loaded machine
# restarts instances more slowly; the drill waits for them, never for the clock).
LOAD_S = 300.0 if SOAK else 60.0
ROLLING_LOAD_S = 300.0 if SOAK else 90.0

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.multiprocess,
    pytest.mark.timeout(max(LOAD_S, ROLLING_LOAD_S) + 180),
    pytest.mark.skipif(
        haproxy_binary() is None, reason="needs Debian's haproxy (apt-get install haproxy)"
    ),
]

# What each kind of request of the load answers when all is well.
EXPECTED = {
    "public_fetch": {200},
    "public_submit": {200, 201},
    "me": {200},
    "forms": {200},
    "health": {200},
}


@pytest.fixture
def balanced(tmp_path: Path) -> Iterator[tuple[Cluster, Balancer]]:
    # HAProxy connects from 127.0.0.1: the one proxy the service believes.
    extra = {"HEALTHFORMS_TRUSTED_PROXIES": "127.0.0.1/32", "HEALTHFORMS_TRUSTED_PROXY_HOPS": "1"}
    with private_cluster(tmp_path, servers=3, extra_env=extra) as cluster:
        try:
            cluster.bootstrap()
        except workflow.FeatureMissing as exc:
            pytest.skip(f"needs a feature not merged on this branch yet: {exc}")
        addresses = [f"127.0.0.1:{server.port}" for server in cluster.servers]
        with running_balancer(tmp_path / "haproxy", addresses) as balancer:
            yield cluster, balancer


def _load(cluster: Cluster, balancer: Balancer, workdir: Path, duration_s: float) -> LoadRun:
    """Load through HAProxy for at most `duration_s`; `_stop(load)` ends it sooner
    (the drill's faults are over: a slow machine gets the time it needs, a fast one
    does not wait)."""
    config = cluster.load_config(
        servers=[balancer.url],
        ca_file=str(balancer.ca_file),
        duration_s=duration_s,
        stop_file=str(workdir / "stop"),
    )
    return LoadRun(config, workdir)


def _stop(load: LoadRun, after_s: float = 2.0) -> None:
    """Let the load run `after_s` more (traffic on the recovered set), then end it."""
    time.sleep(after_s)
    (load.config_path.parent / "stop").touch()


def _client_visible(result: dict[str, Any]) -> dict[str, int]:
    """Every answer the client got that was not the normal one, and every lost request."""
    seen: dict[str, int] = {}
    for key, count in result["counts"].items():
        kind, _, status = key.rpartition(" ")
        if not status.isdigit() or int(status) not in EXPECTED.get(kind, set()):
            seen[key] = count
    return seen


def _check(cluster: Cluster, balancer: Balancer, result: dict[str, Any]) -> dict[str, int]:
    assert_every_answer_had_a_body(result)
    figures = assert_accepted_exactly_once(
        result, cluster.database_url, [form.id for form in cluster.forms]
    )
    ok, report = audit_verify(cluster.env)
    assert ok, f"audit verify failed: {report}"
    assert "unhandled_exception" not in cluster.logs()
    figures["haproxy_retried"] = len(balancer.retried())
    return figures


def _sessions_work_through(balancer: Balancer, cluster: Cluster, times: int = 12) -> None:
    """Every staff session answers through HAProxy, whichever instance takes it."""
    with httpx.Client(verify=balancer.ssl_context(), timeout=10) as client:
        for index in range(times):
            staff = cluster.staff[index % len(cluster.staff)]
            response = client.get(f"{balancer.url}/api/auth/me", headers=staff.headers())
            assert response.status_code == 200, (response.status_code, response.text[:200])


def _restart_in_place(cluster: Cluster, index: int) -> None:
    old = cluster.servers[index]
    cluster.servers[index] = start_server(cluster.env, cluster.log_dir, port=old.port)


def test_an_instance_killed_mid_load_loses_nothing_and_no_client_sees_it(
    balanced: tuple[Cluster, Balancer], tmp_path: Path
) -> None:
    cluster, balancer = balanced
    load = _load(cluster, balancer, tmp_path / "load", LOAD_S)
    rounds = []
    time.sleep(3)
    for round_number in range(5 if SOAK else 1):
        index = round_number % len(cluster.servers)
        name = f"app{index + 1}"
        cluster.servers[index].process.kill()  # SIGKILL: nothing finishes, nothing closes
        killed = time.monotonic()
        cluster.servers[index].process.wait(timeout=10)
        balancer.wait_status(name, ("DOWN",), timeout_s=10)
        out_s = time.monotonic() - killed  # taken out of rotation, from the kill
        time.sleep(2)  # the others carry everything
        _sessions_work_through(balancer, cluster)
        _restart_in_place(cluster, index)
        balancer.wait_status(name, ("UP",), timeout_s=20)
        rounds.append({"instance": name, "taken_out_s": round(out_s, 2),
                       "back_after_kill_s": round(time.monotonic() - killed, 2)})  # fmt: skip
        if SOAK:
            time.sleep(20)
    _stop(load)
    result = load.wait()
    visible = _client_visible(result)
    print(f"\nkill drill: {summary(result)}")
    print(f"kill drill: rounds {rounds}")
    print(f"kill drill: client-visible failures {visible or 'none'}; "
          f"transport errors {result['transport_errors']}")  # fmt: skip
    print("kill drill: HAProxy retried:\n  " + "\n  ".join(balancer.retried()[:10]))
    print("kill drill: HAProxy errors:\n  " + "\n  ".join(balancer.errors()[:10]))
    figures = _check(cluster, balancer, result)
    print(f"kill drill: {figures}")
    assert not result["transport_errors"], result["transport_errors"][:5]
    assert not result["server_errors"], result["server_errors"][:5]
    # A submission the killed instance had claimed answers 409 "in progress" until its
    # claim lapses (60 s): the client is told to wait, nothing is lost or doubled. Any
    # other answer out of the ordinary is a failure the balancer should have hidden.
    assert {k: v for k, v in visible.items() if k != "public_submit 409"} == {}, visible
    assert figures["accepted_201"] > 0
    _sessions_work_through(balancer, cluster)


def test_a_rolling_restart_fails_no_request(
    balanced: tuple[Cluster, Balancer], tmp_path: Path
) -> None:
    cluster, balancer = balanced
    _the_service_believes_the_balancer(cluster, balancer)
    load = _load(cluster, balancer, tmp_path / "load", ROLLING_LOAD_S)
    time.sleep(2)
    steps = []
    for _ in range(2 if SOAK else 1):
        for index in range(len(cluster.servers)):
            name = f"app{index + 1}"
            started = time.monotonic()
            drained_s = balancer.drain(name)
            cluster.servers[index].stop()  # SIGTERM: uvicorn finishes what it has
            _restart_in_place(cluster, index)
            balancer.ready(name)
            balancer.wait_status(name, ("UP",), timeout_s=20)
            steps.append({"instance": name, "drained_s": round(drained_s, 2),
                          "back_s": round(time.monotonic() - started, 2)})  # fmt: skip
    restarted_by = time.time()
    _stop(load)
    result = load.wait()
    visible = _client_visible(result)
    print(f"\nrolling restart: {summary(result)}")
    print(f"rolling restart: steps {steps}")
    print(f"rolling restart: client-visible failures {visible or 'none'}")
    figures = _check(cluster, balancer, result)
    print(f"rolling restart: {figures}")
    assert result["ended"] > restarted_by, "the load ended before the restarts did"
    assert not result["transport_errors"], result["transport_errors"][:5]
    assert not result["server_errors"], result["server_errors"][:5]
    assert visible == {}, visible
    assert figures["unknown_outcome"] == 0
    _sessions_work_through(balancer, cluster)


def _the_service_believes_the_balancer(cluster: Cluster, balancer: Balancer) -> None:
    """A sign-in through HAProxy from 127.0.0.3: the session records 127.0.0.3 (from
    X-Forwarded-For, not HAProxy's 127.0.0.1), and the https Origin the browser sends is
    the request's own (the scheme from X-Forwarded-Proto), so the unsafe request passes
    the origin check without HEALTHFORMS_PUBLIC_URL."""
    assert cluster.admin is not None
    transport = httpx.HTTPTransport(verify=balancer.ssl_context(), local_address="127.0.0.3")
    with httpx.Client(transport=transport, timeout=10) as client:
        login = client.post(
            f"{balancer.url}/api/auth/session-login",
            json={"email": cluster.admin.email, "password": workflow.PASSWORD},
            # A forged entry the client adds: HAProxy appends the real one after it.
            headers={"Origin": balancer.url, "X-Forwarded-For": "198.51.100.66"},
        )
        assert login.status_code == 200, (login.status_code, login.text[:300])
        sessions = client.get(
            f"{balancer.url}/api/auth/sessions",
            headers={"Cookie": f"session={login.cookies['session']}"},
        )
        assert sessions.status_code == 200, sessions.text[:300]
        (current,) = [s for s in sessions.json()["sessions"] if s["current"]]
        assert current["ip"] == "127.0.0.3", current
        # A cross-origin (plain http) Origin is still refused.
        other = client.post(
            f"{balancer.url}/api/auth/session-login",
            json={"email": cluster.admin.email, "password": workflow.PASSWORD},
            headers={"Origin": f"http://127.0.0.1:{balancer.port}"},
        )
        assert other.status_code == 403, (other.status_code, other.text[:200])
    with httpx.Client(timeout=10) as plain:
        redirect = plain.get(f"http://127.0.0.1:{balancer.http_port}/health")
    assert redirect.status_code == 301
    assert redirect.headers["location"].startswith("https://")
