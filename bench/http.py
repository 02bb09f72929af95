"""HTTP benchmark of the whole stack against its floor and its peer, one run, one machine.

    python -m bench.http            (BENCH_SECONDS per load run, default 5)

(a) The Redis floor: GET and EVALSHA round trips/s from one redis-py asyncio process
    (hiredis), one in flight and 50 in flight, on a plain pool and through our
    RedisService (the blocking pool + circuit breaker every feature uses).
(d) HTTP at 1 and 50 connections (wrk, one thread, core 1; each app on core 0): a bare
    FastAPI endpoint, the same plus one Redis GET, the peer stack (SessionMiddleware +
    slowapi on the same Redis), and ours: /health, authenticated GET (/api/auth/me,
    /api/forms), an unsafe request with CSRF (PUT /api/forms/{id}), a patient's fetch +
    submit, PDF generation (first time, timed per response) and PDF served again.
(e) Redis commands per request (INFO commandstats delta / requests) and bytes of Redis
    per session (MEMORY USAGE of the session record and its share of the user's index).
Plus a py-spy profile of the authenticated GET under load (what costs time).

Everything runs on a private Redis and a private SQLite (or BENCH_DATABASE_URL).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench import harness
from bench.harness import LoadResult, Server
from healthforms.redis.embedded import EmbeddedRedis, free_port

SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
CONNECTIONS = (1, 50)
FLOOR_OPS = int(os.environ.get("BENCH_FLOOR_OPS", "20000"))
SESSIONS = int(os.environ.get("BENCH_SESSIONS", "40"))
PDF_COUNT = int(os.environ.get("BENCH_PDF_COUNT", "6"))
PROFILE_SECONDS = float(os.environ.get("BENCH_PROFILE_SECONDS", "8"))

# DESIGN.md "Performance targets".
TARGET_AUTH_VS_BARE = 0.6
AIM_AUTH_VS_BARE = 0.8
TARGET_AUTH_VS_PEER = 2.0
TARGET_BYTES_PER_SESSION = 300
AUTH_GET = "ours GET /api/csrf/diagnostics"


# (a) The Redis floor ----------------------------------------------------------------------


async def _floor(url: str, ops: int) -> dict[str, Any]:
    from redis.asyncio import Redis

    from healthforms.redis.client import RedisService, RedisTarget, build_pool

    plain = Redis.from_url(url, max_connections=64)
    service = RedisService(build_pool(url, max_connections=64), RedisTarget(url, False, False))
    sha = await plain.script_load("return 1")
    await plain.set("bench:floor", "x", ex=600)
    figures: dict[str, Any] = {}

    async def measure(name: str, op: Callable[[], Any], in_flight: int) -> None:
        per_task = ops // in_flight
        deadline = time.perf_counter() + 10.0  # bounded in time as well as in count
        done = 0

        async def loop() -> None:
            nonlocal done
            for _ in range(per_task):
                await op()
                done += 1
                if time.perf_counter() > deadline:
                    return

        began = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(in_flight)))
        elapsed = time.perf_counter() - began
        figures[f"{name} @{in_flight}"] = round(done / elapsed, 1)

    for in_flight in (1, 50):
        await measure("redis GET", lambda: plain.get("bench:floor"), in_flight)
        await measure("redis EVALSHA", lambda: plain.evalsha(sha, 0), in_flight)
        await measure(
            "RedisService EVALSHA",
            lambda: service.call(lambda r: r.evalsha(sha, 0)),
            in_flight,
        )
        # What the scripts use: the shared pipelined connection (redis/multiplex.py).
        await measure(
            "RedisService pipelined EVALSHA",
            lambda: service.pipelined(lambda m: m.evalsha(sha, 0)),
            in_flight,
        )
    await plain.delete("bench:floor")
    await plain.aclose()
    await service.close()
    return figures


def redis_floor(url: str) -> dict[str, float]:
    """Run the floor in its own process on the app core, as the apps run."""
    out = subprocess.run(
        harness.pinned(harness.APP_CORE, [sys.executable, "-m", "bench.http", "floor", url]),
        cwd=str(harness.REPO_ROOT),
        env={**os.environ, "PYTHONPATH": str(harness.REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# (e) Memory per session -------------------------------------------------------------------


def session_memory(redis_url: str, prefix: str) -> dict[str, Any]:
    """Bytes of Redis per live session: its record plus its share of the user's index."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        sizes: dict[str, list[int]] = {"session": [], "sessions": [], "csrf": []}
        for family in sizes:
            for key in client.scan_iter(match=f"{prefix}{family}:*", count=1000):
                usage = client.memory_usage(key, samples=0)
                if usage is not None:
                    sizes[family].append(int(usage))
    finally:
        client.close()
    count = len(sizes["session"])
    if not count:
        return {"sessions": 0}
    per = (sum(sizes["session"]) + sum(sizes["sessions"])) / count
    return {
        "sessions": count,
        "users": len(sizes["sessions"]),
        "bytes_per_session": round(per, 1),
        "session_record_bytes": round(sum(sizes["session"]) / count, 1),
        "index_bytes_per_session": round(sum(sizes["sessions"]) / count, 1),
        "csrf_token_bytes": round(sum(sizes["csrf"]) / len(sizes["csrf"]), 1)
        if sizes["csrf"]
        else None,
    }


# Profile ----------------------------------------------------------------------------------

_PROFILE_BUCKETS = {
    "structlog (request log line)": ("structlog/",),
    "prometheus_client (metrics)": ("prometheus_client/",),
    "redis-py": ("redis/",),
    "hiredis/asyncio streams": ("asyncio/streams", "hiredis"),
    "BlockingConnectionPool": ("redis/asyncio/connection.py:get_connection",),
    "healthforms http layers": ("healthforms/http/",),
    "healthforms security": ("healthforms/security/", "healthforms/identity/"),
    "fastapi dependencies/routing": ("fastapi/",),
    "starlette": ("starlette/",),
    "pydantic": ("pydantic",),
    "json encoding": ("json/",),
    "sqlalchemy": ("sqlalchemy/",),
    "sqlalchemy ORM unit of work": ("sqlalchemy/orm/unitofwork", "sqlalchemy/orm/persistence"),
    "aiosqlite/asyncpg driver": ("aiosqlite/", "asyncpg/", "sqlalchemy/dialects/"),
    "cryptography (AES-GCM, HMAC)": ("cryptography/", "healthforms/crypto/"),
    "audit append": ("healthforms/audit/",),
    "uvicorn/httptools": ("uvicorn/", "httptools"),
}


def summarise_profile(raw: str, top: int = 18) -> dict[str, Any]:
    """From py-spy's collapsed stacks: share of samples per library, and top self frames."""
    total = 0
    inclusive: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        joined = stack
        for bucket, needles in _PROFILE_BUCKETS.items():
            if any(needle in joined for needle in needles):
                inclusive[bucket] += count
        self_time[frames[-1]] += count
    if not total:
        return {"samples": 0}
    return {
        "samples": total,
        "inclusive_pct": {k: round(100 * v / total, 1) for k, v in inclusive.most_common()},
        "top_self_pct": [
            {"frame": frame, "pct": round(100 * count / total, 1)}
            for frame, count in self_time.most_common(top)
        ],
    }


def profile(
    server: Server,
    url: str,
    env: dict[str, str],
    seconds: float,
    *,
    name: str = "auth-get",
    script: str = "request.lua",
    connections: int = 50,
) -> dict[str, Any]:
    """py-spy on `server` while wrk runs `script`; the collapsed stacks go to
    bench/results/profile-<name>.collapsed (kept out of git)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return {"skipped": "py-spy not installed (pip install py-spy)"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "stacks.txt"
        argv = harness.pinned(
            harness.LOAD_CORE,
            [spy, "record", "--pid", str(server.process.pid), "--duration", str(int(seconds)),
             "--rate", "250", "--format", "raw", "--nonblocking", "--output", str(out)],
        )  # fmt: skip
        spy_process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)
        harness.wrk(url, connections=connections, seconds=seconds, script=script, env=env)
        try:
            _, err = spy_process.communicate(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            spy_process.kill()
            return {"skipped": "py-spy overran"}
        if spy_process.returncode != 0 or not out.exists():
            return {"skipped": f"py-spy failed: {err.decode(errors='replace')[-300:]}"}
        raw = out.read_text()
        # The collapsed stacks, for flame graphs or grep (kept out of git).
        (Path(__file__).resolve().parent / "results" / f"profile-{name}.collapsed").write_text(raw)
        return summarise_profile(raw)


# (d) HTTP ---------------------------------------------------------------------------------


class Bench:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.rows: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.commands: dict[str, dict[str, float]] = {}
        self.trips: dict[str, dict[str, float]] = {}
        self.servers: list[Server] = []
        self.server_url: str | None = None  # ours, for its pipelined-connection counters

    def round_trips(
        self, name: str, redis_url: str, method: str, url: str, count: int = 40, **kwargs: Any
    ) -> None:
        """Round trips per request of one kind, counted with MONITOR (sequential requests)."""
        with httpx.Client(timeout=30) as http:

            def fire() -> None:
                http.request(method, url, **kwargs)

            # Steady state: a script's first use on this server costs a NOSCRIPT reload.
            fire()
            self.trips[name] = harness.round_trips(redis_url, fire, count, self.server_url)
        print(f"  {name:<44} Redis per request: {self.trips[name]}", flush=True)

    def measure(
        self,
        name: str,
        group: str,
        role: str,
        server: Server,
        env: dict[str, str],
        *,
        script: str = "request.lua",
        redis_url: str | None = None,
        floor: str | None = None,
    ) -> None:
        for connections in CONNECTIONS:
            before = harness.commandstats(redis_url) if redis_url and connections == 50 else None
            cpu_before = harness.cpu_seconds(server.process.pid)
            result: LoadResult = harness.wrk(
                server.url, connections=connections, seconds=SECONDS, script=script, env=env
            )
            cpu = harness.cpu_seconds(server.process.pid) - cpu_before
            # CPU per request holds up on a shared machine where req/s swings with the
            # neighbours' load: 1 / it is the req/s one free core could serve.
            cpu_us = round(cpu * 1e6 / result.requests, 1) if result.requests else None
            if before is not None and redis_url:
                after = harness.commandstats(redis_url)
                self.commands[name] = harness.per_request(before, after, result.requests)
            row = {
                "name": f"{name} @{connections}",
                "group": f"{group} @{connections}",
                "role": role,
                "ops_per_s": round(result.rps, 1),
                "p50_ms": result.p50_ms,
                "p99_ms": result.p99_ms,
                "errors": result.errors,
                "cpu_us_per_req": cpu_us,
            }
            if floor:
                row["floor"] = f"{floor} @{connections}"
            if result.error_count:
                self.notes.append(f"{name} @{connections}: errors {result.errors}")
            self.rows.append(row)
            print(
                f"  {row['name']:<44} {row['ops_per_s']:>9.1f}/s  p50 {result.p50_ms:>7.2f} ms"
                f"  p99 {result.p99_ms:>7.2f} ms  cpu {cpu_us} us/req  {result.errors or ''}",
                flush=True,
            )

    def skipped(self, name: str, reason: str) -> None:
        self.notes.append(f"{name}: not measured: {reason}")
        print(f"  {name:<44} not measured: {reason}", flush=True)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def _redis_binary() -> str | None:
    return os.environ.get("BENCH_REDIS_SERVER_BIN") or shutil.which("redis-server")


def run() -> dict[str, Any]:
    """The whole HTTP benchmark; prints its table and returns the figures (bench/README.md)."""
    from tests.support import workflow

    workdir = Path(tempfile.mkdtemp(prefix="hf-bench-http-"))
    bench = Bench(workdir)
    redis_server = EmbeddedRedis.start(
        workdir / "redis", binary=_redis_binary(), appendonly=False, port=free_port()
    )
    redis_pin = subprocess.run(
        ["taskset", "-cp", harness.LOAD_CORE, str(redis_server.process.pid)],
        capture_output=True,
        check=False,
    )
    del redis_pin
    redis_url = redis_server.url
    floor: dict[str, float] = {}
    profile_figures: dict[str, Any] = {}
    memory: dict[str, Any] = {}
    pdf_first: dict[str, Any] = {}
    try:
        print("== (a) Redis floor: one redis-py asyncio process (hiredis), app core", flush=True)
        floor = redis_floor(redis_url)
        for name, value in floor.items():
            print(f"  {name:<44} {value:>9.1f}/s", flush=True)
            bench.rows.append(
                {"name": name, "group": "redis floor", "role": "floor", "ops_per_s": value}
            )

        database_url = os.environ.get("BENCH_DATABASE_URL") or (
            f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
        )
        from healthforms.db.migrate import upgrade

        upgrade(database_url)
        env = workflow.server_env(
            database_url=database_url,
            redis_url=redis_url,
            data_dir=workdir / "data",
            extra={"HEALTHFORMS_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "info")},
        )
        peer_env = {"BENCH_REDIS_URL": redis_url}
        ours_port, bare_port, peer_port = free_port(), free_port(), free_port()
        ours = harness.launch(
            "ours",
            [sys.executable, "-m", "healthforms", "serve", "--port", str(ours_port)],
            env,
            workdir / "logs",
            port=ours_port,
        )
        bench.servers.append(ours)
        bench.server_url = ours.url
        bare = harness.launch(
            "bare", harness.uvicorn_argv("bench.peers.bare_app:create_app", bare_port),
            peer_env, workdir / "logs", port=bare_port, ready_path="/ping",
        )  # fmt: skip
        bench.servers.append(bare)
        peer = harness.launch(
            "peer", harness.uvicorn_argv("bench.peers.peer_stack:create_app", peer_port),
            peer_env, workdir / "logs", port=peer_port, ready_path="/api/me",
        )  # fmt: skip
        bench.servers.append(peer)

        print("== (d) HTTP: wrk -t1 on core 1, each app on core 0", flush=True)
        group = "authenticated GET"
        bench.measure(
            "bare FastAPI /ping", group, "floor", bare, harness.request_env("GET", "/ping")
        )
        bench.measure(
            "FastAPI + 1 Redis GET", group, "info", bare,
            harness.request_env("GET", "/redis-get"), redis_url=redis_url,
        )  # fmt: skip
        peer_login = httpx.post(f"{peer.url}/login", json={"userId": "usr_peer"}, timeout=10)
        peer_cookie = f"session={peer_login.cookies['session']}"
        bench.measure(
            "peer stack GET /api/me", group, "peer", peer,
            harness.request_env("GET", "/api/me", headers={"Cookie": peer_cookie}),
            redis_url=redis_url,
        )  # fmt: skip
        bench.measure(
            "ours GET /health", "health", "ours", ours,
            harness.request_env("GET", "/health"), redis_url=redis_url,
        )  # fmt: skip

        staff: workflow.StaffSession | None = None
        try:
            workflow.create_admin(env, "bench-admin@bench.example", organization="Bench Clinic")
            staff = workflow.login(ours.url, "bench-admin@bench.example")
        except (workflow.FeatureMissing, RuntimeError) as exc:
            bench.skipped("ours authenticated requests", str(exc)[:200])
        if staff is not None:
            auth = {"Cookie": staff.cookie_header}
            unsafe = {**auth, "X-CSRF-Token": staff.csrf_token}
            # The security stack alone: session + api bucket (one EVALSHA), no database.
            bench.measure(
                AUTH_GET, group, "ours", ours,
                harness.request_env("GET", "/api/csrf/diagnostics", headers=auth),
                redis_url=redis_url, floor="bare FastAPI /ping",
            )  # fmt: skip
            bench.round_trips(
                AUTH_GET, redis_url, "GET", f"{ours.url}/api/csrf/diagnostics", headers=auth
            )
            bench.measure(
                "ours GET /api/auth/me", "authenticated GET (db)", "ours", ours,
                harness.request_env("GET", "/api/auth/me", headers=auth), redis_url=redis_url,
                floor="bare FastAPI /ping",
            )  # fmt: skip
            _measure_features(bench, workflow, ours, staff, auth, unsafe, redis_url)
            pdf_first = _pdf_first_generation(bench, workflow, ours, staff, unsafe)
            print(f"== profile: py-spy on ours during {AUTH_GET} @50", flush=True)
            profile_figures = profile(
                ours, ours.url, harness.request_env("GET", "/api/csrf/diagnostics", headers=auth),
                PROFILE_SECONDS,
            )  # fmt: skip
            print(json.dumps(profile_figures, indent=1)[:3000], flush=True)
            print(f"== (e) Redis per session: {SESSIONS} sign-ins over 5 users", flush=True)
            memory = _sessions_memory(workflow, ours, staff, redis_url, env)
            print(f"  {memory}", flush=True)
    finally:
        bench.stop()
        redis_server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    print("== (e) Redis commands per request (INFO commandstats delta / requests, @50;")
    print("   commands run inside scripts count too; round trips are counted with MONITOR)")
    for name, per in bench.commands.items():
        print(f"  {name:<44} {per}")
    ratios = _ratios(bench.rows, memory, bench.trips)
    for ratio in ratios:
        print(f"  {ratio['name']:<60} {ratio['value']!s:>8}  target {ratio['target']}  "
              f"{'ok' if ratio['ok'] else 'MISSED' if ratio['ok'] is False else ''}")  # fmt: skip
    return {
        "module": "http",
        "rows": bench.rows,
        "ratios": ratios,
        "redis_commands_per_request": bench.commands,
        "redis_round_trips_per_request": bench.trips,
        "memory_per_session": memory,
        "pdf_first_generation": pdf_first,
        "profile_auth_get": profile_figures,
        "notes": bench.notes,
        "config": {"seconds": SECONDS, "connections": CONNECTIONS, "log_level": env_log_level()},
    }


def env_log_level() -> str:
    return os.environ.get("BENCH_LOG_LEVEL", "info")


def _measure_features(
    bench: Bench,
    workflow: Any,
    ours: Server,
    staff: Any,
    auth: dict[str, str],
    unsafe: dict[str, str],
    redis_url: str,
) -> None:
    try:
        form = workflow.publish_form(ours.url, staff, "Bench intake")
    except (workflow.FeatureMissing, RuntimeError) as exc:
        bench.skipped("ours forms / public / pdf", str(exc)[:200])
        return
    bench.measure(
        "ours GET /api/forms", "authenticated GET (db)", "ours", ours,
        harness.request_env("GET", "/api/forms", headers=auth), redis_url=redis_url,
    )  # fmt: skip
    bench.round_trips(
        "ours GET /api/forms", redis_url, "GET", f"{ours.url}/api/forms", headers=auth
    )
    body = json.dumps(
        {"title": "Bench intake", "description": "edited", "fields": workflow.DRILL_FIELDS}
    )
    # Round trips first, on an idle server: after the 50-connection run, PUTs waiting on
    # SQLite's single writer finish for seconds and would be counted too.
    bench.round_trips(
        "ours PUT /api/forms/{id} (CSRF)", redis_url, "PUT", f"{ours.url}/api/forms/{form.id}",
        headers={**unsafe, "Content-Type": "application/json"}, content=body, count=20,
    )  # fmt: skip
    bench.measure(
        "ours PUT /api/forms/{id} (CSRF)", "unsafe (CSRF)", "ours", ours,
        harness.request_env("PUT", f"/api/forms/{form.id}", body=body, headers=unsafe),
        redis_url=redis_url,
    )  # fmt: skip
    try:
        workflow.submit_once(ours.url, form.public_id)
    except (workflow.FeatureMissing, RuntimeError) as exc:
        bench.skipped("ours public fetch + submit", str(exc)[:200])
        return
    bench.round_trips(
        "ours public fetch", redis_url, "GET", f"{ours.url}/api/public/forms/{form.public_id}"
    )
    with httpx.Client(timeout=30) as http:
        nonces = [
            http.get(f"{ours.url}/api/public/forms/{form.public_id}").json()["nonce"]
            for _ in range(20)
        ]
    submit_url = f"{ours.url}/api/public/forms/{form.public_id}/responses"
    with httpx.Client(timeout=30) as http:
        pending = list(nonces)

        def submit() -> None:
            http.post(submit_url, json={"nonce": pending.pop(), "answers": workflow.DRILL_ANSWERS})

        bench.trips["ours public submit"] = harness.round_trips(
            redis_url, submit, len(nonces), ours.url
        )
    print(f"  {'ours public submit':<44} Redis per request: {bench.trips['ours public submit']}")
    bench.measure(
        "ours public fetch+submit", "public", "ours", ours,
        {"WRK_PUBLIC_ID": form.public_id, "WRK_ANSWERS": json.dumps(workflow.DRILL_ANSWERS)},
        script="submit.lua", redis_url=redis_url,
    )  # fmt: skip
    bench.form_id = form.id  # type: ignore[attr-defined]


def _pdf_first_generation(
    bench: Bench, workflow: Any, ours: Server, staff: Any, unsafe: dict[str, str]
) -> dict[str, Any]:
    form_id = getattr(bench, "form_id", None)
    if form_id is None:
        return {}
    with httpx.Client(base_url=ours.url, timeout=60) as http:
        listed = http.get(f"/api/forms/{form_id}/responses", headers={"Cookie": unsafe["Cookie"]})
        if listed.status_code != 200:
            bench.skipped("ours PDF", f"listing responses: {listed.status_code}")
            return {}
        ids = [item["id"] for item in listed.json()["responses"]][:PDF_COUNT]
        timings: list[float] = []
        for response_id in ids:
            began = time.perf_counter()
            made = http.post(f"/api/responses/{response_id}/generate-pdf", headers=unsafe)
            if made.status_code != 200:
                bench.skipped("ours PDF", f"generate-pdf: {made.status_code} {made.text[:120]}")
                return {}
            timings.append((time.perf_counter() - began) * 1000)
    timings.sort()
    first = {
        "count": len(timings),
        "p50_ms": round(timings[len(timings) // 2], 1),
        "max_ms": round(timings[-1], 1),
    }
    print(f"  ours PDF first generation (sequential)       {first}", flush=True)
    bench.measure(
        "ours PDF served again", "pdf", "ours", ours,
        harness.request_env("POST", f"/api/responses/{ids[0]}/generate-pdf", headers=unsafe),
    )  # fmt: skip
    return first


def _sessions_memory(
    workflow: Any, ours: Server, admin: Any, redis_url: str, env: dict[str, str]
) -> dict[str, Any]:
    users = ["bench-admin@bench.example"]
    for index in range(4):
        email = f"bench-user-{index}@bench.example"
        try:
            workflow.create_user(ours.url, admin, email, role="viewer")
        except (workflow.FeatureMissing, RuntimeError):
            break
        users.append(email)
    for index in range(SESSIONS):
        workflow.login(ours.url, users[index % len(users)])
    return session_memory(redis_url, env.get("HEALTHFORMS_REDIS_PREFIX", "hf:"))


def _ratios(
    rows: list[dict[str, Any]], memory: dict[str, Any], trips: dict[str, dict[str, float]]
) -> list[dict[str, Any]]:
    by_name = {row["name"]: row for row in rows}
    ratios: list[dict[str, Any]] = []
    for connections in CONNECTIONS:
        # DESIGN.md states its targets for wrk at 50 connections. At 1 connection every
        # request waits for its Redis round trip in full (FastAPI + one Redis GET is
        # itself about 0.5 x /ping there): shown, not judged.
        judged = connections == 50
        ours = by_name.get(f"{AUTH_GET} @{connections}")
        bare = by_name.get(f"bare FastAPI /ping @{connections}")
        peer = by_name.get(f"peer stack GET /api/me @{connections}")
        if ours and bare and bare["ops_per_s"]:
            value = round(ours["ops_per_s"] / bare["ops_per_s"], 2)
            ratios.append({
                "name": f"auth GET / bare FastAPI @{connections}",
                "value": value,
                "target": f">= {TARGET_AUTH_VS_BARE} (aim {AIM_AUTH_VS_BARE})",
                "ok": value >= TARGET_AUTH_VS_BARE if judged else None,
            })  # fmt: skip
        if ours and bare and ours.get("cpu_us_per_req") and bare.get("cpu_us_per_req"):
            value = round(bare["cpu_us_per_req"] / ours["cpu_us_per_req"], 2)
            ratios.append({
                "name": f"auth GET / bare FastAPI, by CPU per request @{connections}",
                "value": value,
                "target": f">= {TARGET_AUTH_VS_BARE} (aim {AIM_AUTH_VS_BARE})",
                "ok": value >= TARGET_AUTH_VS_BARE if judged else None,
            })  # fmt: skip
        if ours and peer and ours.get("cpu_us_per_req") and peer.get("cpu_us_per_req"):
            value = round(peer["cpu_us_per_req"] / ours["cpu_us_per_req"], 2)
            ratios.append({
                "name": f"auth GET / peer stack, by CPU per request @{connections}",
                "value": value,
                "target": f">= {TARGET_AUTH_VS_PEER}",
                "ok": value >= TARGET_AUTH_VS_PEER if judged else None,
            })  # fmt: skip
        if ours and peer and peer["ops_per_s"]:
            value = round(ours["ops_per_s"] / peer["ops_per_s"], 2)
            ratios.append({
                "name": f"auth GET / peer stack @{connections}",
                "value": value,
                "target": f">= {TARGET_AUTH_VS_PEER}",
                "ok": value >= TARGET_AUTH_VS_PEER if judged else None,
            })  # fmt: skip
            if peer.get("p99_ms"):
                p99 = round(ours["p99_ms"] / peer["p99_ms"], 2)
                ratios.append({
                    "name": f"auth GET p99 / peer p99 @{connections}",
                    "value": p99,
                    "target": "<= 0.5",
                    "ok": p99 <= 0.5 if judged else None,
                })  # fmt: skip
    if memory.get("bytes_per_session") is not None:
        value = memory["bytes_per_session"]
        ratios.append({
            "name": "Redis bytes per session",
            "value": value,
            "target": f"<= {TARGET_BYTES_PER_SESSION}",
            "ok": value <= TARGET_BYTES_PER_SESSION,
        })  # fmt: skip
    # Round trips are counted as socket writes of the scripts' pipelined connection:
    # commands sent in one event-loop turn leave together (the public submit's rate
    # token and nonce claim). Commands on redis-py's pool are one write each; MONITOR's
    # top-level command count is printed beside them.
    targets: tuple[tuple[str, float], ...] = (
        (AUTH_GET, 1.0),
        ("ours GET /api/forms", 1.0),
        ("ours PUT /api/forms/{id} (CSRF)", 2.0),  # session + the save's edit-lock check
        ("ours public fetch", 1.0),
        ("ours public submit", 2.0),
    )
    for name, target in targets:
        if name in trips:
            value = trips[name]["round_trips"]
            ratios.append({
                "name": f"Redis round trips: {name.removeprefix('ours ')}",
                "value": value,
                "target": f"<= {target:g}",
                "ok": value <= target + 0.05,
            })  # fmt: skip
    return ratios


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "floor":
        print(json.dumps(asyncio.run(_floor(sys.argv[2], FLOOR_OPS))))
        return
    run()


if __name__ == "__main__":
    main()
