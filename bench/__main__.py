"""`python -m bench [module ...]`: run every benchmark module, print one summary, write JSON.

Each module bench/<name>.py exposes `def run() -> dict` (see bench/README.md): it prints
its own table and returns its figures. A module without it runs as `python -m
bench.<name>` (its main()), and a JSON object on its last stdout line becomes its
figures. A module that fails is reported and the others still run. The summary
(ratios ours / peer and ours / floor) goes to bench/results/summary-<UTC timestamp>.json
and bench/results/latest.json.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
NOT_MODULES = {"harness"}
# Cheap Redis-level modules first, the HTTP run (it starts servers) last.
ORDER = ["ratelimit", "locks", "sessions", "submit", "pdf", "health", "http"]
MODULE_TIMEOUT_S = 900


def discover() -> list[str]:
    names = [
        path.stem
        for path in BENCH_DIR.glob("*.py")
        if not path.stem.startswith("_") and path.stem not in NOT_MODULES
    ]
    return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def run_module(name: str) -> dict[str, Any]:
    """Run one module; never raise: a failure becomes {"error": ...}."""
    began = time.monotonic()
    print(f"\n######## bench.{name}", flush=True)
    try:
        module = importlib.import_module(f"bench.{name}")
        entry: Callable[[], Any] | None = getattr(module, "run", None)
        # Only a synchronous run() is called in this process; anything else (a main()
        # that reads sys.argv or is a coroutine) runs as its own `python -m bench.<name>`.
        if entry is not None and not inspect.iscoroutinefunction(entry):
            figures = entry()
            result = figures if isinstance(figures, dict) else {"returned": repr(figures)[:200]}
        else:
            result = _as_subprocess(name)
    except SystemExit as exc:
        result = {} if exc.code in (0, None) else {"error": f"exited with {exc.code}"}
    except Exception as exc:  # noqa: BLE001 - one failing module must not stop the rest
        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    result.setdefault("seconds", round(time.monotonic() - began, 1))
    return result


def _as_subprocess(name: str) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", f"bench.{name}"],
        cwd=str(BENCH_DIR.parent),
        env={**os.environ, "PYTHONPATH": str(BENCH_DIR.parent)},
        capture_output=True,
        text=True,
        timeout=MODULE_TIMEOUT_S,
        check=False,
    )
    print(completed.stdout, end="", flush=True)
    print(completed.stderr, end="", file=sys.stderr, flush=True)
    result: dict[str, Any] = {
        "exit_code": completed.returncode,
        "stdout_tail": completed.stdout[-2000:],
    }
    # A module may print its figures as JSON on its last line.
    lines = completed.stdout.strip().splitlines()
    if lines:
        try:
            parsed = json.loads(lines[-1])
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            result.update(parsed)
    if completed.returncode != 0:
        result["error"] = f"exited with {completed.returncode}"
    return result


def derived_ratios(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """ours / peer and ours / floor from every module's rows (bench/README.md)."""
    rows = [
        {**row, "module": module}
        for module, result in results.items()
        for row in result.get("rows", [])
        if isinstance(row, dict) and row.get("ops_per_s")
    ]
    by_name = {row["name"]: row for row in rows}
    ratios: list[dict[str, Any]] = []
    for ours in (row for row in rows if row.get("role") == "ours"):
        references = [
            row
            for row in rows
            if row.get("group") == ours.get("group") and row.get("role") in ("peer", "floor")
        ]
        if ours.get("floor") in by_name and by_name[ours["floor"]] not in references:
            references.append(by_name[ours["floor"]])
        for ref in references:
            entry: dict[str, Any] = {
                "module": ours["module"],
                "ours": ours["name"],
                "reference": ref["name"],
                "kind": f"ours / {ref['role']}",
                "ops_ratio": round(ours["ops_per_s"] / ref["ops_per_s"], 2),
            }
            if ours.get("cpu_us_per_req") and ref.get("cpu_us_per_req"):
                # req/s per core, ours / reference: steady when neighbours steal the CPU.
                entry["cpu_ratio"] = round(ref["cpu_us_per_req"] / ours["cpu_us_per_req"], 2)
            if ours.get("p99_ms") and ref.get("p99_ms"):
                entry["p99_ratio"] = round(ours["p99_ms"] / ref["p99_ms"], 2)
            ratios.append(entry)
    return ratios


def print_summary(results: dict[str, dict[str, Any]], ratios: list[dict[str, Any]]) -> None:
    print("\n" + "=" * 100)
    print("SUMMARY (ratios inside one run; absolute figures move with the machine's load)")
    print("=" * 100)
    print("req/s x: ours / reference; per-core x: the same from CPU time per request")
    head = ("module", "ours", "reference", "req/s x", "per-core x", "p99 x")
    print(f"{head[0]:<8} {head[1]:<38} {head[2]:<32} {head[3]:>8} {head[4]:>10} {head[5]:>6}")
    for ratio in ratios:
        print(
            f"{ratio['module']:<8} {ratio['ours'][:38]:<38} {ratio['reference'][:32]:<32} "
            f"{ratio['ops_ratio']:>8} {ratio.get('cpu_ratio', ''):>10} "
            f"{ratio.get('p99_ratio', ''):>6}"
        )
    print("-" * 100)
    print(f"{'module':<10} {'target':<60} {'value':>10} {'goal':<16} result")
    for module, result in results.items():
        for target in result.get("ratios", []):
            if not isinstance(target, dict) or "name" not in target:
                continue
            ok = target.get("ok")
            verdict = "ok" if ok else ("MISSED" if ok is False else "")
            print(
                f"{module:<10} {target['name'][:60]:<60} {target.get('value', '')!s:>10} "
                f"{str(target.get('target', ''))[:16]:<16} {verdict}"
            )
        if result.get("error"):
            print(f"{module:<10} FAILED: {result['error']}")
    print("=" * 100)


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=str(BENCH_DIR.parent), capture_output=True, text=True,
            timeout=10, check=False,
        ).stdout.strip()  # fmt: skip
    except OSError:
        return ""


def main(argv: list[str]) -> int:
    names = argv or discover()
    unknown = [name for name in names if name not in discover()]
    if unknown:
        print(f"unknown bench modules: {unknown}; have {discover()}", file=sys.stderr)
        return 2
    started = datetime.now(UTC)
    results = {name: run_module(name) for name in names}
    ratios = derived_ratios(results)
    print_summary(results, ratios)
    summary = {
        "started": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": _git("rev-parse", "HEAD"),
        "merged": _git("log", "--oneline", "-25").splitlines(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "ratios": ratios,
        "modules": results,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(summary, indent=1, default=str)
    (RESULTS_DIR / f"summary-{stamp}.json").write_text(text)
    (RESULTS_DIR / "latest.json").write_text(text)
    print(f"wrote {RESULTS_DIR / f'summary-{stamp}.json'} and latest.json")
    return 1 if any(result.get("error") for result in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
