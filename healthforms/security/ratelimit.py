"""Distributed rate limiting: GCRA token buckets in Redis (gcra.lua + ratelimit.lua).

This module holds the pieces every caller shares: the policy arguments a script
needs, the decision it returns, and the response headers. The session hot path
takes the `api` token inside its own script with the same gcra.lua library, and
turns the reply into a RateDecision with `decision_from_reply`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from healthforms.config import RateSpec

RATELIMIT_KEY = "ratelimit:{{{identifier}}}:{policy}"  # braces: a Cluster hash tag


@dataclass(frozen=True, slots=True)
class RateDecision:
    policy: str
    allowed: bool
    limit: int  # the bucket size (rate + burst)
    remaining: int
    retry_after_ms: int  # 0 when allowed; -1 when the cost can never pass
    reset_after_ms: int  # until the bucket is full again
    window_s: float  # the policy period, for RateLimit-Policy

    @property
    def retry_after_s(self) -> int:
        """Whole seconds, at least 1, rounded up: a request sent after this passes."""
        if self.retry_after_ms < 0:
            return max(1, math.ceil(self.reset_after_ms / 1000))
        return max(1, math.ceil(self.retry_after_ms / 1000))

    @property
    def reset_s(self) -> int:
        return max(0, math.ceil(self.reset_after_ms / 1000))


def bucket_key(prefix: str, identifier: str, policy: str) -> str:
    return prefix + RATELIMIT_KEY.format(identifier=identifier, policy=policy)


def script_args(spec: RateSpec, cost: int = 1) -> list[int]:
    """ARGV triple for one policy: emission interval (µs), capacity, cost."""
    return [round(spec.emission_interval_ms * 1000), spec.capacity, cost]


def decision_from_reply(policy: str, spec: RateSpec, reply: Sequence[int]) -> RateDecision:
    """Turn 4 integers of a GCRA script reply into a decision."""
    allowed, remaining, retry_ms, reset_ms = (int(v) for v in reply[:4])
    return RateDecision(
        policy=policy,
        allowed=bool(allowed),
        limit=spec.capacity,
        remaining=max(0, remaining),
        retry_after_ms=retry_ms,
        reset_after_ms=max(0, reset_ms),
        window_s=spec.period_s,
    )


def rate_limit_headers(decision: RateDecision) -> list[tuple[bytes, bytes]]:
    """RateLimit-* headers of API.md (legacy trio plus the IETF draft's two fields)."""
    window = int(decision.window_s)
    headers = [
        (b"ratelimit-limit", str(decision.limit).encode()),
        (b"ratelimit-remaining", str(decision.remaining).encode()),
        (b"ratelimit-reset", str(decision.reset_s).encode()),
        (
            b"ratelimit-policy",
            f'"{decision.policy}";q={decision.limit};w={window}'.encode(),
        ),
        (
            b"ratelimit",
            f'"{decision.policy}";r={decision.remaining};t={decision.reset_s}'.encode(),
        ),
    ]
    if not decision.allowed:
        headers.append((b"retry-after", str(decision.retry_after_s).encode()))
    return headers
