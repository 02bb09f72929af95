"""GET /health against a bare endpoint on the same server: requests/s and the ratio.

    python -m bench.health [--duration 10] [--connections 50]

The server (uvicorn, 1 worker, uvloop + httptools, the full middleware stack) runs
pinned to CPU 0 and the load generator (wrk, else a bounded asyncio httpx client in
its own process) to CPU 1, so they do not compete for a core. The bare endpoint
`/bench/ping` exists only in this benchmark's app variant (`create_bench_app`); the
service itself has no such route. Redis and the database are the embedded default
(a private Valkey + SQLite in a temporary directory) unless BENCH_REDIS_URL /
BENCH_DATABASE_URL are set. Figures move ±40% between runs on a shared machine:
compare the ratio inside one run, never across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from healthforms.redis.embedded import free_port

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "health.json"


def create_bench_app() -> FastAPI:
    """The real app plus a bare endpoint, for this benchmark only."""
    from healthforms.app import create_app

    app = create_app()

    @app.get("/bench/ping", include_in_schema=False)
    async def ping() -> PlainTextResponse:
        return PlainTextResponse("pong")

    return app


@dataclass(frozen=True)
class Run:
    path: str
    requests_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    tool: str


def _pinned(cpu: int, argv: list[str]) -> list[str]:
    taskset = shutil.which("taskset")
    if taskset and (os.cpu_count() or 1) > 1:
        return [taskset, "-c", str(cpu), *argv]
    return argv


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(url: str, duration: int, connections: int) -> Run:
    wrk = shutil.which("wrk")
    assert wrk is not None
    out = subprocess.run(
        _pinned(1, [wrk, "-t1", f"-c{connections}", f"-d{duration}s", "--latency", url]),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pct = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, flags=re.MULTILINE))
    latency = {k: _ms(*re.fullmatch(r"([\d.]+)(\w+)", v).groups()) for k, v in pct.items()}  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", out))
    socket_errors = re.search(r"Socket errors:.*", out)
    if socket_errors:
        errors += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(0)))
    return Run(url.rsplit("/", 2)[-1], rps, latency.get("50"), latency.get("99"), errors, "wrk")


_HTTPX_LOAD = """
import asyncio, json, sys, time
import httpx

async def main(url, duration, connections):
    latencies, errors = [], 0
    deadline = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:
        async def worker():
            nonlocal errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                response = await client.get(url)
                latencies.append(time.perf_counter() - started)
                errors += response.status_code != 200
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    print(json.dumps({"n": len(latencies), "elapsed": elapsed, "errors": errors,
                      "p50": latencies[len(latencies) // 2] * 1000,
                      "p99": latencies[int(len(latencies) * 0.99)] * 1000}))

asyncio.run(main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3])))
"""


def run_httpx(url: str, duration: int, connections: int) -> Run:
    out = subprocess.run(
        _pinned(1, [sys.executable, "-c", _HTTPX_LOAD, url, str(duration), str(connections)]),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    data = json.loads(out)
    return Run(
        url.rsplit("/", 2)[-1],
        data["n"] / data["elapsed"],
        data["p50"],
        data["p99"],
        data["errors"],
        "httpx",
    )


def start_server(port: int, data_dir: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HEALTHFORMS_DATA_DIR": str(data_dir),
        "HEALTHFORMS_LOG_LEVEL": "warning",
    }
    for ours, theirs in (("BENCH_REDIS_URL", "REDIS_URL"), ("BENCH_DATABASE_URL", "DATABASE_URL")):
        env.pop(theirs, None)
        if os.environ.get(ours):
            env[theirs] = os.environ[ours]
    argv = [
        sys.executable, "-m", "uvicorn", "--factory", "bench.health:create_bench_app",
        "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop", "--http", "httptools",
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    process = subprocess.Popen(_pinned(0, argv), cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise SystemExit("bench server exited during start-up")
        time.sleep(0.2)
    process.terminate()
    raise SystemExit("bench server did not become healthy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per endpoint")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--tool", choices=["wrk", "httpx"], default=None)
    args = parser.parse_args()
    tool = args.tool or ("wrk" if shutil.which("wrk") else "httpx")
    runner = run_wrk if tool == "wrk" else run_httpx

    port = free_port()
    data_dir = Path(tempfile.mkdtemp(prefix="hfb-", dir="/tmp"))
    server = start_server(port, data_dir)
    try:
        base = f"http://127.0.0.1:{port}"
        runner(f"{base}/bench/ping", 2, args.connections)  # warm-up
        bare = runner(f"{base}/bench/ping", args.duration, args.connections)
        health = runner(f"{base}/health", args.duration, args.connections)
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(data_dir, ignore_errors=True)

    ratio = health.requests_per_s / bare.requests_per_s
    print(f"{'endpoint':<14}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for run in (bare, health):
        p50 = f"{run.p50_ms:.2f}" if run.p50_ms is not None else "-"
        p99 = f"{run.p99_ms:.2f}" if run.p99_ms is not None else "-"
        print(f"{run.path:<14}{run.requests_per_s:>10.0f}{p50:>10}{p99:>10}{run.errors:>8}")
    print(
        f"/health runs at {ratio:.2f} x the bare endpoint's requests/s ({tool}, "
        f"{args.connections} connections, {args.duration}s each)"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "health",
                "ratio_health_to_bare": round(ratio, 3),
                "runs": [asdict(bare), asdict(health)],
                "tool": tool,
                "connections": args.connections,
                "duration_s": args.duration,
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
