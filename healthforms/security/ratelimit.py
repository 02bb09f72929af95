"""Distributed rate limiting: GCRA token buckets in Redis (gcra.lua + ratelimit.lua).

One EVALSHA takes tokens from every bucket a request needs (all or none). While Redis
is unavailable the same algorithm runs per process in memory (LocalBuckets), each
such decision counted in /metrics; when Redis answers again the shared buckets are
used again. The session layer takes the `api` token inside its own script with the
same gcra.lua library, turns the reply into a RateDecision with `decision_from_reply`,
and uses `RateLimiter.take_local` / `record_exceeded` like the path layer does.

The HTTP side (which paths take which policy, the RateLimit headers, the 429 and its
audit event) is http/ratelimits.py.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import structlog
from redis.exceptions import NoScriptError, RedisError

from healthforms.config import RateSpec, Settings
from healthforms.metrics import Metrics
from healthforms.redis.client import RedisService
from healthforms.redis.errors import TRANSPORT_ERRORS, RedisUnavailable
from healthforms.redis.scripts import LuaScript

log = structlog.get_logger("healthforms.security")

POLICIES = ("auth", "api", "pdf", "public", "anonymous", "draft_code", "draft_code_form")
RATELIMIT_KEY = "ratelimit:{{{identifier}}}:{policy}"  # braces: a Cluster hash tag
# Marks "this identifier's flood was already audited in this window" (same slot).
AUDITED_KEY = "ratelimit:{{{identifier}}}:{policy}:audited"
EXCEEDED_LOG_EVENT = "SECURITY: Rate limit exceeded"

RATELIMIT_SCRIPT = LuaScript.beside(__file__, "gcra.lua", "ratelimit.lua")
GIVE_BACK_SCRIPT = LuaScript.beside(__file__, "gcra.lua", "ratelimit_give_back.lua")
CHARGE_SCRIPT = LuaScript.beside(__file__, "gcra.lua", "ratelimit_charge.lua")
_SHA = RATELIMIT_SCRIPT.sha
_tuple_new = tuple.__new__


# RateDecision and RateVerdict are NamedTuples rather than frozen dataclasses: they are
# built on every limited request, and a frozen dataclass's __init__ (one
# object.__setattr__ per field) cost more than the rest of the Python wrapper
# around the EVALSHA together (bench/ratelimit.py). They are just as immutable.
class RateDecision(NamedTuple):
    policy: str
    allowed: bool
    limit: int  # the bucket size (rate + burst)
    remaining: int
    retry_after_ms: int  # 0 when allowed or when this bucket had room; -1: cost never passes
    reset_after_ms: int  # until the bucket is full again
    window_s: float  # the policy period, for RateLimit-Policy
    identifier: str = ""  # whose bucket (an IP, a /64 or a user id); never logged as is

    @property
    def retry_after_s(self) -> int:
        """Whole seconds, at least 1, rounded up: a request sent after this passes."""
        if self.retry_after_ms < 0:
            return max(1, math.ceil(self.reset_after_ms / 1000))
        return max(1, math.ceil(self.retry_after_ms / 1000))

    @property
    def reset_s(self) -> int:
        return max(0, math.ceil(self.reset_after_ms / 1000))

    @property
    def refused_here(self) -> bool:
        """This bucket itself refused (as opposed to another bucket of the same request)."""
        return not self.allowed and self.retry_after_ms != 0


class RateVerdict(NamedTuple):
    """The answer for one request: every policy's decision, and whether it may pass."""

    decisions: tuple[RateDecision, ...]
    allowed: bool
    degraded: bool = False  # decided by this process alone (Redis unavailable)


class GcraReply(NamedTuple):
    """One bucket's 4 integers in a GCRA reply, by name: ratelimit.lua replies with one
    group per policy (KEYS order), LocalBuckets.take likewise, session_check.lua with
    one for the `api` bucket."""

    allowed: int  # 1 taken, 0 refused (or not charged: another bucket refused)
    remaining: int  # tokens left after this request (refused: left now)
    retry_after_ms: int  # 0 when this bucket had room; -1: the cost never passes
    reset_after_ms: int  # until the bucket is full again

    @classmethod
    def from_reply(cls, reply: Sequence[int], at: int = 0) -> GcraReply:
        """The group that starts at `at` of a flat reply."""
        return _tuple_new(cls, (reply[at], reply[at + 1], reply[at + 2], reply[at + 3]))

    @classmethod
    def each(cls, reply: Sequence[int]) -> list[GcraReply]:
        """Every group of a flat reply, in KEYS order."""
        return [
            _tuple_new(cls, (reply[at], reply[at + 1], reply[at + 2], reply[at + 3]))
            for at in range(0, len(reply), 4)
        ]


def headline(decisions: Sequence[RateDecision]) -> RateDecision:
    """The decision the legacy RateLimit-Limit/Remaining/Reset trio describes.

    Refused: the policy that makes the client wait longest. Allowed: the one closest
    to refusing.
    """
    if len(decisions) == 1:
        return decisions[0]
    refused = [d for d in decisions if d.refused_here]
    if refused:
        return max(refused, key=lambda d: (d.retry_after_s, d.reset_after_ms))
    return min(decisions, key=lambda d: (d.remaining, -d.reset_after_ms))


def bucket_key(prefix: str, identifier: str, policy: str) -> str:
    return prefix + RATELIMIT_KEY.format(identifier=identifier, policy=policy)


def emission_us(spec: RateSpec) -> int:
    """The refill interval of one token, integer microseconds (what gcra.lua computes in)."""
    return max(1, round(spec.emission_interval_ms * 1000))


def script_args(spec: RateSpec, cost: int = 1) -> list[int]:
    """ARGV triple for one policy: emission interval (µs), capacity, cost."""
    return [emission_us(spec), spec.capacity, cost]


def decision_from_reply(
    policy: str, spec: RateSpec, reply: Sequence[int], identifier: str = ""
) -> RateDecision:
    """Turn one bucket's 4 integers of a GCRA script reply (a GcraReply, or the same 4
    integers as they came: session_check.lua's `api` group, LocalBuckets.take for one
    bucket) into a decision."""
    # Unpacked into GcraReply's fields by name: this runs for every request on the
    # session path, where building a GcraReply first would be one more tuple each time.
    allowed, remaining, retry_after_ms, reset_after_ms = reply
    return RateDecision(
        policy,
        allowed == 1,
        spec.capacity,
        remaining if remaining > 0 else 0,
        int(retry_after_ms),
        reset_after_ms if reset_after_ms > 0 else 0,
        spec.period_s,
        identifier,
    )


# Response headers -------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _policy_header(policy: str, limit: int, window_s: float) -> bytes:
    """RateLimit-Policy for one policy: the same for every request under it."""
    return f'"{policy}";q={limit};w={int(window_s)}'.encode()


def rate_limit_headers(decisions: Sequence[RateDecision]) -> list[tuple[bytes, bytes]]:
    """RateLimit-* headers of API.md (the legacy trio plus the IETF draft's two fields) for
    every policy a request went through (api + pdf gives two list items)."""
    if len(decisions) == 1 and decisions[0].allowed:
        # Every allowed request with one policy (most of them) comes here.
        d = decisions[0]
        reset = d.reset_s
        return [
            (b"ratelimit-limit", b"%d" % d.limit),
            (b"ratelimit-remaining", b"%d" % d.remaining),
            (b"ratelimit-reset", b"%d" % reset),
            (b"ratelimit-policy", _policy_header(d.policy, d.limit, d.window_s)),
            (b"ratelimit", b'"%s";r=%d;t=%d' % (d.policy.encode(), d.remaining, reset)),
        ]
    main = headline(decisions)
    policy_items = ", ".join(f'"{d.policy}";q={d.limit};w={int(d.window_s)}' for d in decisions)
    state_items = ", ".join(f'"{d.policy}";r={d.remaining};t={d.reset_s}' for d in decisions)
    headers = [
        (b"ratelimit-limit", str(main.limit).encode()),
        (b"ratelimit-remaining", str(main.remaining).encode()),
        (b"ratelimit-reset", str(main.reset_s).encode()),
        (b"ratelimit-policy", policy_items.encode()),
        (b"ratelimit", state_items.encode()),
    ]
    if any(not d.allowed for d in decisions):
        retry = max(d.retry_after_s for d in decisions if not d.allowed)
        headers.append((b"retry-after", str(retry).encode()))
    return headers


# The per-process fallback -----------------------------------------------------------------


def _monotonic_us() -> int:
    return time.monotonic_ns() // 1000


def _ceil_ms(us: int) -> int:
    return -(-us // 1000)


class LocalBuckets:
    """GCRA buckets in this process's memory: the algorithm of gcra.lua, to the microsecond.

    Used while Redis is unavailable (each process then limits on its own) and for other
    "at most once per window" needs. Bounded: beyond `max_keys` the least recently used
    bucket is forgotten, so a flood of identifiers cannot exhaust memory; forgetting a
    bucket only ever errs towards a full bucket.
    """

    def __init__(self, max_keys: int = 100_000, clock: Callable[[], int] = _monotonic_us) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.max_keys = max_keys
        self._clock = clock
        self._tats: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tats)

    def take(
        self, requests: Sequence[tuple[str, int, int, int]], now_us: int | None = None
    ) -> list[int]:
        """Take from every bucket or none; reply exactly as ratelimit.lua does.

        `requests` holds (key, emission_us, capacity, cost) per bucket; the reply is
        4 integers per bucket: allowed, remaining, retry_after_ms, reset_after_ms.
        """
        now = self._clock() if now_us is None else now_us
        tats = self._tats
        peeked: list[tuple[int, int, int, int, int]] = []
        all_allowed = True
        for key, emission, capacity, cost in requests:
            tat = tats.get(key, now)
            if tat < now:
                tat = now
            level = emission * capacity - (tat - now)
            if cost > capacity:
                peeked.append((0, level // emission, -1, tat - now, tat))
                all_allowed = False
                continue
            slack = level - emission * cost
            if slack < 0:
                peeked.append((0, level // emission, -slack, tat - now, tat))
                all_allowed = False
                continue
            new_tat = tat + emission * cost
            peeked.append((1, slack // emission, 0, new_tat - now, new_tat))
        reply: list[int] = []
        for (key, emission, _capacity, cost), (
            allowed,
            remaining,
            retry_us,
            reset_us,
            new_tat,
        ) in zip(requests, peeked, strict=True):
            if all_allowed:
                self._store(key, new_tat)
            elif allowed:
                # Another bucket refused the request: nothing was taken from this one.
                allowed, remaining = 0, remaining + cost
                reset_us -= emission * cost
            reply += (
                allowed,
                remaining,
                -1 if retry_us < 0 else _ceil_ms(retry_us),
                _ceil_ms(reset_us),
            )
        return reply

    def give_back(self, key: str, emission_us: int, cost: int = 1) -> None:
        """Return `cost` tokens to a bucket (ratelimit_give_back.lua's model)."""
        tat = self._tats.get(key)
        if tat is None:
            return
        new_tat = tat - emission_us * cost
        if new_tat <= self._clock():
            del self._tats[key]
        else:
            self._tats[key] = new_tat

    def charge(self, key: str, emission_us: int, capacity: int, cost: int, max_debt: int) -> int:
        """Charge `cost` tokens, into debt if need be (ratelimit_charge.lua's model);
        return the tokens left (negative: debt)."""
        now = self._clock()
        tat = max(self._tats.get(key, now), now)
        ceiling = now + emission_us * (capacity + max_debt)
        new_tat = max(tat, min(tat + emission_us * cost, ceiling))
        if new_tat > now:
            self._store(key, new_tat)
        return (emission_us * capacity - (new_tat - now)) // emission_us

    def _store(self, key: str, tat: int) -> None:
        tats = self._tats
        if key in tats:
            tats.move_to_end(key)
        tats[key] = tat
        if len(tats) > self.max_keys:
            tats.popitem(last=False)


# The service ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Policy:
    name: str
    spec: RateSpec
    emission_us: int
    window_ms: int
    capacity: int
    period_s: float
    key_tail: str  # "}:<policy>": the key is <prefix>ratelimit:{<identifier>}:<policy>
    # Pre-encoded ARGV for the usual cost of 1: no per-call int -> bytes encoding.
    args_cost1: tuple[bytes, bytes, bytes]

    def args(self, cost: int) -> tuple[bytes, ...]:
        if cost == 1:
            return self.args_cost1
        return (self.args_cost1[0], self.args_cost1[1], str(cost).encode())


def _policy(name: str, spec: RateSpec) -> _Policy:
    emission = emission_us(spec)
    return _Policy(
        name=name,
        spec=spec,
        emission_us=emission,
        window_ms=max(1, round(spec.period_s * 1000)),
        capacity=spec.capacity,
        period_s=spec.period_s,
        key_tail="}:" + name,
        args_cost1=(str(emission).encode(), str(spec.capacity).encode(), b"1"),
    )


class RateLimiter:
    """Shared GCRA rate limits: one EVALSHA per check, never retried; local when Redis is down."""

    def __init__(
        self,
        redis: RedisService,
        settings: Settings,
        metrics: Metrics,
        *,
        log_key: bytes = b"",
        local: LocalBuckets | None = None,
    ) -> None:
        self.redis = redis
        self.metrics = metrics
        self.local = local or LocalBuckets()
        self._audited_local = LocalBuckets(max_keys=50_000)
        self._log_key = log_key
        self._prefix = redis.prefix
        self._key_head = redis.prefix + "ratelimit:{"
        self.policies = {name: _policy(name, settings.rate(name)) for name in POLICIES}
        self._degraded_allowed = metrics.degraded_decisions.labels("ratelimit", "allowed")
        self._degraded_refused = metrics.degraded_decisions.labels("ratelimit", "refused")
        self._rejections = {
            name: metrics.ratelimit_rejections.labels(name) for name in self.policies
        }

    def key(self, policy: str, identifier: str) -> str:
        return self._prefix + "ratelimit:{" + identifier + "}:" + policy

    async def check_one(self, policy: str, identifier: str, cost: int = 1) -> RateVerdict:
        """Take `cost` tokens from one policy's bucket for `identifier`."""
        p = self.policies[policy]
        args: tuple[bytes, ...]
        if cost == 1:
            args = p.args_cost1
        elif cost > 1:
            args = p.args(cost)
        else:
            raise ValueError("cost must be at least 1")
        key = self._key_head + identifier + p.key_tail
        redis = self.redis
        try:
            try:
                # Straight on the pipelined connection: no wrapper coroutine per check.
                reply = await redis.evalsha(_SHA, 1, key, *args)
            except NoScriptError:
                # Redis restarted or SCRIPT FLUSH: the script never ran, so loading it and
                # running it now is no retry.
                reply = await redis.script(RATELIMIT_SCRIPT, (key,), args)
            else:
                redis.succeeded()
        except TRANSPORT_ERRORS as exc:
            redis.failed(exc)
            reply = self.take_local(((key, p.emission_us, p.capacity, cost),))
            return self._verdict_local(((p, identifier),), reply)
        except (RedisUnavailable, RedisError):
            reply = self.take_local(((key, p.emission_us, p.capacity, cost),))
            return self._verdict_local(((p, identifier),), reply)
        # One GcraReply, unpacked into its fields by name: no tuple of its own on every
        # check (and one UNPACK_SEQUENCE is no slower than the four subscripts it replaces).
        allowed_flag, remaining, retry_after_ms, reset_after_ms = reply
        allowed = allowed_flag == 1
        # tuple.__new__ skips the generated NamedTuple __new__: the hot path of every check.
        decision = _tuple_new(
            RateDecision,
            (
                policy,
                allowed,
                p.capacity,
                remaining if remaining > 0 else 0,
                retry_after_ms,
                reset_after_ms if reset_after_ms > 0 else 0,
                p.period_s,
                identifier,
            ),
        )
        return _tuple_new(RateVerdict, ((decision,), allowed, False))

    async def check(self, checks: Sequence[tuple[str, str, int]]) -> RateVerdict:
        """Take tokens from several buckets at once, all or none: [(policy, identifier, cost)]."""
        if len(checks) == 1:
            policy, identifier, cost = checks[0]
            return await self.check_one(policy, identifier, cost)
        if not checks:
            raise ValueError("check needs at least one policy")
        used: list[tuple[_Policy, str]] = []
        keys: list[str] = []
        args: list[bytes] = []
        local_requests: list[tuple[str, int, int, int]] = []
        for policy, identifier, cost in checks:
            if cost < 1:
                raise ValueError("cost must be at least 1")
            p = self.policies[policy]
            key = self.key(policy, identifier)
            used.append((p, identifier))
            keys.append(key)
            args.extend(p.args(cost))
            local_requests.append((key, p.emission_us, p.capacity, cost))
        try:
            reply = await self.redis.pipelined(
                lambda r: RATELIMIT_SCRIPT(r, keys, args), idempotent=False
            )
        except (RedisUnavailable, RedisError):
            return self._verdict_local(used, self.take_local(local_requests))
        return self._verdict(used, reply, degraded=False)

    async def give_back(self, decision: RateDecision, cost: int = 1) -> None:
        """Return the `cost` tokens a request took (its `decision` names the policy and
        the identifier, as the check made them): the request turned out not to count
        against the policy, e.g. a successful sign-in under `auth`, so a clinic whose
        staff share one public address is not locked out by its own sign-ins while
        failures keep counting. Never fills a bucket beyond full. Redis unavailable: the
        per-process bucket, which then took the token, gets it back."""
        if cost < 1 or not decision.allowed:
            return
        p = self.policies[decision.policy]
        key = self.key(decision.policy, decision.identifier)
        try:
            await self.redis.pipelined(
                lambda r: GIVE_BACK_SCRIPT(r, (key,), (p.emission_us, cost)), idempotent=False
            )
        except (RedisUnavailable, RedisError):
            self.local.give_back(key, p.emission_us, cost)

    async def charge(self, policy: str, identifier: str, cost: int, *, max_debt: int) -> int:
        """Charge `cost` more tokens for work already done; return the tokens left
        (negative: debt). Never refused: the work happened. The bucket may go up to
        `max_debt` tokens below empty, so the identifier's next requests wait until it
        is paid for (the pdf policy: a render's CPU time, pdf/service.py). Redis
        unavailable: charged to the per-process bucket."""
        if cost < 1:
            return 0
        p = self.policies[policy]
        key = self.key(policy, identifier)
        args = (p.emission_us, p.capacity, cost, max(0, max_debt))
        try:
            reply = await self.redis.pipelined(
                lambda r: CHARGE_SCRIPT(r, (key,), args), idempotent=False
            )
        except (RedisUnavailable, RedisError):
            return self.local.charge(key, p.emission_us, p.capacity, cost, max(0, max_debt))
        return int(reply[0])

    def take_local(self, requests: Sequence[tuple[str, int, int, int]]) -> list[int]:
        """The per-process fallback (Redis unavailable); counted in /metrics.

        For callers with a script of their own (the session hot path): pass the same
        (key, emission_us, capacity, cost) tuples, get the same reply as ratelimit.lua.
        """
        reply = self.local.take(requests)
        if all(bucket.allowed == 1 for bucket in GcraReply.each(reply)):
            self._degraded_allowed.inc()
        else:
            self._degraded_refused.inc()
        return reply

    def _verdict_local(
        self, used: Sequence[tuple[_Policy, str]], reply: Sequence[int]
    ) -> RateVerdict:
        return self._verdict(used, reply, degraded=True)

    def _verdict(
        self, used: Sequence[tuple[_Policy, str]], reply: Sequence[int], *, degraded: bool
    ) -> RateVerdict:
        decisions = tuple(
            decision_from_reply(p.name, p.spec, bucket, identifier)
            for (p, identifier), bucket in zip(used, GcraReply.each(reply), strict=True)
        )
        return RateVerdict(decisions, all(d.allowed for d in decisions), degraded)

    # Refusals -----------------------------------------------------------------------------

    def hash_identifier(self, identifier: str) -> str:
        """A keyed hash for logs: correlates floods without revealing the IP or user id."""
        digest = hmac.new(self._log_key, identifier.encode("utf-8"), hashlib.sha256)
        return digest.hexdigest()[:16]

    async def record_exceeded(
        self, verdict: RateVerdict, request_id: str | None
    ) -> list[RateDecision]:
        """Log and count a refused request; return the refusals to audit (the first of
        each identifier and policy in a window, across every instance)."""
        to_audit: list[RateDecision] = []
        for decision in verdict.decisions:
            if not decision.refused_here:
                continue
            self._rejections[decision.policy].inc()
            hashed = self.hash_identifier(decision.identifier)
            log.warning(
                EXCEEDED_LOG_EVENT,
                policy=decision.policy,
                identifier_hash=hashed,
                retry_after_s=decision.retry_after_s,
                degraded=verdict.degraded,
                request_id=request_id,
            )
            if await self._first_in_window(decision):
                to_audit.append(decision)
        return to_audit

    async def _first_in_window(self, decision: RateDecision) -> bool:
        """Whether no refusal of this identifier and policy was audited in this window."""
        p = self.policies[decision.policy]
        return await self.first_in_window(decision.identifier, p.name, p.window_ms)

    async def first_in_window(self, identifier: str, what: str, window_ms: int) -> bool:
        """Whether this is the first `what` of `identifier` in a window of `window_ms`
        (what audits a flood once per client and window instead of once per request)."""
        key = self._prefix + AUDITED_KEY.format(identifier=identifier, policy=what)
        # Once per process per window first (a flood then costs no extra round trip),
        # then once across every instance with SET NX PX.
        seen = self._audited_local.take(((key, window_ms * 1000, 1, 1),))
        if seen[0] != 1:
            return False
        try:
            return bool(
                await self.redis.call(
                    lambda r: r.set(key, b"1", nx=True, px=window_ms), idempotent=False
                )
            )
        except (RedisUnavailable, RedisError):
            return True

    async def load_script(self) -> None:
        """Load the script at start-up, so the first request is a plain EVALSHA."""
        try:
            await self.redis.call(lambda r: r.script_load(RATELIMIT_SCRIPT.source), idempotent=True)
        except (RedisUnavailable, RedisError):
            log.warning("ratelimit_script_not_loaded", reason="redis unavailable")
