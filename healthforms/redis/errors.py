"""What the Redis layer raises, and which low-level errors mean "the server is not answering"."""

from __future__ import annotations

import asyncio

from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    ClusterError,
    RedisClusterException,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Errors that mean "the server is not answering", as opposed to a bad command.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    OSError,
    asyncio.TimeoutError,
    # Cluster: a failover or a slot move under way, or no node reachable yet.
    ClusterDownError,
    ClusterError,
    TryAgainError,
    RedisClusterException,
)


class RedisUnavailable(Exception):
    """Redis cannot be used right now (breaker open or the call failed); degrade."""


class PoolExhausted(RedisUnavailable):
    """No pooled connection (or pipelined slot) became free in time; Redis itself may be fine."""
