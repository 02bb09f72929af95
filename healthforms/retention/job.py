"""The retention purge of a running service: every process asks for each round, one
process of the whole deployment runs it.

Rounds are the consecutive periods of HEALTHFORMS_PURGE_INTERVAL_S since the epoch
(with the default day: UTC days). Shortly after a round starts (and a minute after
start-up) every process of every instance asks Redis for it with one command:
`SET purge:round:<interval>:<n> <process token> NX PX <two rounds>`. The process that
set the key runs the purge (retention/service.py); the others skip the round. The key
expires two rounds later: every key has a TTL, and a round cannot run twice while
clocks differ by less than a round. Restarts within a round find it taken.

Failure modes:
- Redis unavailable (or its pool exhausted): nobody can tell who runs the round, so this
  process skips it and asks again after RETRY_S. The purge is idempotent, so a late
  round loses nothing; the database fallback of the lock service is not used for a job
  that can wait.
- The purge fails (the database is away, a form's batch is refused): the claim is
  released (compare-and-delete: only while it is still ours) and this process asks
  again after RETRY_S. A batch is all-or-nothing with its audit event, so a retry never
  deletes or records a response twice.
- A process dies mid-round: its claim stays until it expires; the next round purges
  what is left. Shutdown stops the purge between batches (the batch in flight commits
  first); the rest waits for the next round too.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from enum import StrEnum

import structlog
from redis.exceptions import RedisError

from healthforms.crypto.keys import KeyRing
from healthforms.db.engine import Database
from healthforms.metrics import Metrics
from healthforms.redis.client import RedisService
from healthforms.redis.errors import RedisUnavailable
from healthforms.retention.service import PURGE_BATCH, purge_expired
from healthforms.security.locks import RELEASE_SCRIPT, new_token
from healthforms.submissions.drafts.service import sweep_expired as sweep_expired_drafts

log = structlog.get_logger("healthforms.retention")

ROUND_KEY = "purge:round:{interval}:{number}"
# After Redis or the purge failed: ask again this long after (at most a round).
RETRY_S = 300.0
# The first round is asked for this long after start-up (at most a round): a start is
# not slowed down by a purge, and in a rolling restart the round is long taken.
FIRST_ROUND_DELAY_S = 60.0
# Processes wait a random part of a round (at most a minute) before asking, so they do
# not all ask at the same instant.
JITTER_FRACTION = 0.01
MAX_JITTER_S = 60.0
STOP_WAIT_S = 10.0  # a batch in flight at shutdown may take this long to commit
ROUNDS_KEPT = 32  # outcomes of the recent rounds this process remembers (`rounds`)


class RoundOutcome(StrEnum):
    RAN = "ran"
    SKIPPED = "skipped"  # another process took the round
    REDIS_UNAVAILABLE = "redis_unavailable"
    FAILED = "failed"


_DECIDED = frozenset({RoundOutcome.RAN, RoundOutcome.SKIPPED})


class PurgeJob:
    """The background task of one process; see the module docstring."""

    def __init__(
        self,
        db: Database,
        redis: RedisService,
        keys: KeyRing,
        metrics: Metrics,
        interval_s: float,
        *,
        batch: int = PURGE_BATCH,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.redis = redis
        self.keys = keys
        self.metrics = metrics
        self.interval_s = interval_s
        self.batch = batch
        self.clock = clock
        self.token = new_token()  # this process, as the holder of the rounds it takes
        # The recent rounds' outcomes, oldest first (for inspection: tests, debugging).
        self.rounds: dict[int, RoundOutcome] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def retry_s(self) -> float:
        return min(self.interval_s, RETRY_S)

    def _jitter(self) -> float:
        return random.uniform(0, min(self.interval_s * JITTER_FRACTION, MAX_JITTER_S))  # noqa: S311 - spread, not a secret

    def _until_next_round(self) -> float:
        now = self.clock()
        return (int(now // self.interval_s) + 1) * self.interval_s - now + self._jitter()

    async def run_round(self) -> RoundOutcome:
        """Ask for the current round and run the purge if this process got it."""
        number = int(self.clock() // self.interval_s)
        decided = self.rounds.get(number)
        if decided in _DECIDED:
            return decided  # woken early: this round is done here
        outcome = await self._round(number)
        self.rounds[number] = outcome
        while len(self.rounds) > ROUNDS_KEPT:
            del self.rounds[next(iter(self.rounds))]
        self.metrics.purge_rounds.labels(outcome=outcome.value).inc()
        return outcome

    async def _round(self, number: int) -> RoundOutcome:
        key = self.redis.key(ROUND_KEY.format(interval=f"{self.interval_s:g}", number=number))
        try:
            if not await self._claim(key):
                log.info("purge_round", round=number, outcome=RoundOutcome.SKIPPED.value)
                return RoundOutcome.SKIPPED
        except (RedisUnavailable, RedisError) as exc:
            log.warning(
                "purge_round",
                round=number,
                outcome=RoundOutcome.REDIS_UNAVAILABLE.value,
                error_type=type(exc).__name__,
                retry_in_s=self.retry_s,
            )
            return RoundOutcome.REDIS_UNAVAILABLE
        try:
            results = await purge_expired(
                self.db, self.keys, batch=self.batch, should_stop=self._stopping.is_set
            )
            # Patients' expired drafts (submissions/drafts/) go in the same round.
            drafts_swept = await sweep_expired_drafts(self.db, self.keys, batch=self.batch)
        except Exception as exc:  # noqa: BLE001 - the job outlives any failure; retried
            log.error("purge_round", round=number, outcome="failed", error_type=type(exc).__name__)
            await self._release(key)
            return RoundOutcome.FAILED
        purged = sum(r.count for r in results)
        self.metrics.responses_purged.inc(purged)
        failed = [r.form.form_id for r in results if r.failed]
        outcome = RoundOutcome.FAILED if failed else RoundOutcome.RAN
        log.info(
            "purge_round",
            round=number,
            outcome=outcome.value,
            forms=len(results),
            purged=purged,
            drafts_swept=drafts_swept,
            failed_forms=failed,
        )
        if failed:
            await self._release(key)
        return outcome

    async def _claim(self, key: str) -> bool:
        ttl_ms = max(1, round(2 * self.interval_s * 1000))
        if await self.redis.call(
            lambda r: r.set(key, self.token, nx=True, px=ttl_ms), idempotent=True
        ):
            return True
        # A resent SET whose first copy went through (reply lost) finds our own token.
        holder = await self.redis.call(lambda r: r.get(key), idempotent=True)
        return bool(holder == self.token.encode())

    async def _release(self, key: str) -> None:
        """Give the round back (only while it is still ours), so it is run again."""
        with contextlib.suppress(RedisUnavailable, RedisError):
            await self.redis.pipelined(
                lambda r: RELEASE_SCRIPT(r, keys=[key], args=[self.token]), idempotent=True
            )

    async def _run(self) -> None:
        delay = min(self.interval_s, FIRST_ROUND_DELAY_S) + self._jitter()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return
            outcome = await self.run_round()
            retry = outcome in (RoundOutcome.REDIS_UNAVAILABLE, RoundOutcome.FAILED)
            delay = self.retry_s if retry else self._until_next_round()

    def start(self) -> None:
        """Start the rounds; an interval of 0 leaves the job off."""
        if self.interval_s <= 0:
            log.info("purge_job_off", reason="HEALTHFORMS_PURGE_INTERVAL_S=0")
            return
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="retention-purge")

    async def stop(self) -> None:
        if self._task is None:
            return
        # Let a batch in flight commit with its event: a query cancelled half-way leaves
        # its pooled connection in a state the next user trips over.
        self._stopping.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), STOP_WAIT_S)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None
