"""Prometheus metrics: one registry per app, so several apps in one process never collide.

Under `healthforms serve --workers N` (N > 1) every worker is a process of its own, and
a scrape lands on one of them. So `serve` turns on prometheus_client's multiprocess
mode (PROMETHEUS_MULTIPROC_DIR, a fresh private directory): each worker writes its
counters and histograms to memory-mapped files there, and /metrics merges every
worker's files, so one scrape sees the whole server. The Redis figures, read live in
one process, become gauges each worker publishes every few seconds (and the scraping
worker just before answering). With one worker nothing of this runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    write_to_textfile,
)
from prometheus_client import values as prometheus_values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


# Redis up, pool figures, pipelined-connection figures.
RedisFigures = tuple[bool, dict[str, int], dict[str, int]]


class _RedisCollector(Collector):
    """Reads Redis up/pool figures at scrape time instead of updating gauges per request."""

    def __init__(self, read: Callable[[], RedisFigures]) -> None:
        self._read = read

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        up, pool, pipeline = self._read()
        yield GaugeMetricFamily(
            "healthforms_redis_up", "1 while Redis answers, 0 while degraded", value=int(up)
        )
        family = GaugeMetricFamily(
            "healthforms_redis_pool_connections",
            "Redis pool connections by state",
            labels=["state"],
        )
        family.add_metric(["total"], pool.get("total_connections", 0))
        family.add_metric(["idle"], pool.get("idle_connections", 0))
        family.add_metric(
            ["in_use"], pool.get("total_connections", 0) - pool.get("idle_connections", 0)
        )
        yield family
        # The scripts' pipelined connection: commands per write tells how much batching
        # the load gives (1.0 when idle; more under concurrency).
        yield CounterMetricFamily(
            "healthforms_redis_pipeline_commands",
            "Commands sent on the pipelined script connection",
            value=pipeline.get("commands", 0),
        )
        yield CounterMetricFamily(
            "healthforms_redis_pipeline_writes",
            "Socket writes on the pipelined script connection (round trips)",
            value=pipeline.get("writes", 0),
        )


# How often each worker publishes its Redis figures in multiprocess mode.
REDIS_FIGURES_INTERVAL_S = 5.0
_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db$")


def multiprocess_dir() -> str | None:
    """PROMETHEUS_MULTIPROC_DIR when this process records into it, else None."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    # prometheus_client chose its value class when it was imported: trust that choice.
    if not path or prometheus_values.ValueClass is prometheus_values.MutexValue:
        return None
    return path


def _forget_dead_processes(path: str) -> None:
    """Drop the live gauges of workers that are gone (killed: no shutdown of their own).
    Their counters stay: a counter never goes down when a worker is replaced."""
    for name in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        match = _LIVE_GAUGE_FILE.search(name)
        if match is None:
            continue
        pid = int(match.group(1))
        if not _process_alive(pid):
            mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def _process_alive(pid: int) -> bool:
    """Whether `pid` still runs. A worker killed a moment ago stays a zombie until its
    supervisor reaps it: signal 0 still reaches a zombie, so /proc's state decides."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return not Path("/proc/self/stat").exists()  # gone since the signal, or no /proc
    except OSError:
        return True
    # "pid (comm) state ...": comm may hold spaces and parentheses.
    return stat[stat.rindex(")") + 2 :].split(maxsplit=1)[0] != "Z"


class _SharedRedisFigures:
    """The Redis figures of every worker as multiprocess gauges and counters."""

    def __init__(self, read: Callable[[], RedisFigures]) -> None:
        self._read = read
        self.up = Gauge(
            "healthforms_redis_up",
            "1 while Redis answers, 0 while degraded (the lowest of the live workers)",
            multiprocess_mode="livemin",
            registry=None,
        )
        self.pool = Gauge(
            "healthforms_redis_pool_connections",
            "Redis pool connections by state (all live workers)",
            ["state"],
            multiprocess_mode="livesum",
            registry=None,
        )
        self.commands = Counter(
            "healthforms_redis_pipeline_commands",
            "Commands sent on the pipelined script connection",
            registry=None,
        )
        self.writes = Counter(
            "healthforms_redis_pipeline_writes",
            "Socket writes on the pipelined script connection (round trips)",
            registry=None,
        )
        self._sent = {"commands": 0, "writes": 0}
        self._task: asyncio.Task[None] | None = None

    def publish(self) -> None:
        up, pool, pipeline = self._read()
        self.up.set(int(up))
        total, idle = pool.get("total_connections", 0), pool.get("idle_connections", 0)
        self.pool.labels("total").set(total)
        self.pool.labels("idle").set(idle)
        self.pool.labels("in_use").set(total - idle)
        for name, counter in (("commands", self.commands), ("writes", self.writes)):
            now = pipeline.get(name, 0)
            if now > self._sent[name]:
                counter.inc(now - self._sent[name])
            self._sent[name] = now

    def start(self) -> None:
        self.publish()
        with contextlib.suppress(RuntimeError):  # no running loop: published on scrape only
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(REDIS_FIGURES_INTERVAL_S)
            self.publish()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess_dir = multiprocess_dir()
        self._shared_redis: _SharedRedisFigures | None = None
        self.http_requests = Counter(
            "healthforms_http_requests_total",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_duration = Histogram(
            "healthforms_http_request_duration_seconds",
            "HTTP request duration by method, route template and status",
            ["method", "route", "status"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.ratelimit_rejections = Counter(
            "healthforms_ratelimit_rejections_total",
            "Requests refused by a rate-limit policy",
            ["policy"],
            registry=self.registry,
        )
        self.lock_conflicts = Counter(
            "healthforms_lock_conflicts_total",
            "Lock acquisitions refused because another holder had the lock",
            ["kind"],
            registry=self.registry,
        )
        self.degraded_decisions = Counter(
            "healthforms_degraded_decisions_total",
            "Decisions taken without Redis (fallbacks), by feature and result",
            ["feature", "decision"],
            registry=self.registry,
        )

        self.outbox_deliveries = Counter(
            "healthforms_outbox_deliveries_total",
            "Outbox deliveries by channel and outcome (sent, retry, dead, skipped)",
            ["channel", "outcome"],
            registry=self.registry,
        )
        self.outbox_published = Counter(
            "healthforms_outbox_published_total",
            "Outbox messages copied onto the Redis stream (republished ones included)",
            registry=self.registry,
        )
        self.purge_rounds = Counter(
            "healthforms_purge_rounds_total",
            "Rounds of the retention purge job by outcome: ran, skipped (another process "
            "ran it), redis_unavailable or failed (both retried)",
            ["outcome"],
            registry=self.registry,
        )
        self.responses_purged = Counter(
            "healthforms_responses_purged_total",
            "Responses the retention purge job of this process deleted",
            registry=self.registry,
        )

        # Read at scrape time (health/routes.py), from Redis and the database, so every
        # process reports the deployment's truth whatever process is scraped. Under
        # several workers the live ones' values merge: the worst policy reading wins,
        # the backlog figures (the same database) take the highest.
        self.redis_eviction_policy_safe = Gauge(
            "healthforms_redis_eviction_policy_safe",
            "1 when Redis' maxmemory-policy is noeviction, 0 when it may evict keys "
            "(nonces, locks, rate buckets); absent until read",
            multiprocess_mode="livemin",
            registry=self.registry,
        )
        self.outbox_backlog = Gauge(
            "healthforms_outbox_backlog_messages",
            "Outbox messages not yet handled to the end (deployment-wide, from the database)",
            multiprocess_mode="livemax",
            registry=self.registry,
        )
        self.outbox_oldest_age = Gauge(
            "healthforms_outbox_oldest_unhandled_age_seconds",
            "Age of the oldest outbox message not yet handled (0 when none waits)",
            multiprocess_mode="livemax",
            registry=self.registry,
        )

    def watch_redis(self, read: Callable[[], RedisFigures]) -> None:
        if self.multiprocess_dir is None:
            self.registry.register(_RedisCollector(read))
            return
        self._shared_redis = _SharedRedisFigures(read)
        self._shared_redis.start()

    def exposition(self) -> bytes:
        """The text a scrape gets: this process's registry, or in multiprocess mode
        every worker's figures merged (counters summed, dead workers' counts kept)."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        if self._shared_redis is not None:
            self._shared_redis.publish()
        _forget_dead_processes(self.multiprocess_dir)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(merged)

    async def close(self) -> None:
        """At shutdown: stop publishing, and take this worker's live gauges away."""
        if self._shared_redis is not None:
            await self._shared_redis.stop()
        if self.multiprocess_dir is not None:
            mark_process_dead(os.getpid(), self.multiprocess_dir)  # type: ignore[no-untyped-call]


# Jobs run from a scheduler (`healthforms audit verify`, `healthforms backup`) leave their
# result for node_exporter's textfile collector (`--metrics-file`): Prometheus then
# alerts on a failed or a missing run (deploy/prometheus/alerts.yml).
JOB_METRICS: dict[str, str] = {
    "healthforms_audit_verify_ok": "1 when the last `healthforms audit verify` found every "
    "chain intact and every checkpoint matched, else 0",
    "healthforms_audit_verify_events": "Audit events the last `audit verify` checked",
    "healthforms_audit_verify_last_run_timestamp_seconds": "When `audit verify` last ran "
    "(Unix time)",
    "healthforms_backup_last_success_timestamp_seconds": "When `healthforms backup` last "
    "wrote a backup (Unix time)",
    "healthforms_backup_size_bytes": "Size of the last backup written",
}


def write_job_metrics(path: Path, values: dict[str, float]) -> None:
    """Write `values` (names from JOB_METRICS) atomically as a Prometheus text file."""
    registry = CollectorRegistry(auto_describe=True)
    for name, value in values.items():
        Gauge(name, JOB_METRICS[name], registry=registry).set(value)
    write_to_textfile(str(path), registry)
