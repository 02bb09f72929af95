"""A per-process cache of immutable things, invalidated across instances over Redis pub/sub.

Made for what is frozen once written but can be withdrawn: a published form version is
never edited, only replaced (a new publish) or withdrawn (unpublish, archive). Every
process keeps what it read in memory; whoever changes one calls `invalidate(key)`,
which drops it here and PUBLISHes the key, and every process subscribed drops it too.

Pub/sub delivers at most once, so the cache trusts itself only while it can tell it
heard everything:
- an entry is served for at most `max_age_s` (a message lost without its connection
  dropping costs at most that much staleness);
- while the subscription is not established (a PING every second went unanswered for
  2.5 s: a frozen server refuses nothing, it just stops talking), or the breaker says
  Redis is down, an entry is served for at most `unsubscribed_max_age_s` (1 s): the
  cache helps with a burst but cannot be left stale by an outage;
- every time the subscription is (re-)established, everything cached is dropped:
  whatever was published while we were away, we did not hear.

Keys are strings; the channel name carries the service's key prefix, so test runs and
deployments that share a Redis do not hear each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Generic, TypeVar

import structlog
from redis.exceptions import RedisError

from healthforms.redis.client import RedisService
from healthforms.redis.errors import RedisUnavailable

log = structlog.get_logger("healthforms.redis")

V = TypeVar("V")

_RECONNECT_MAX_S = 5.0
_PING_EVERY_S = 1.0
_DEAF_AFTER_S = 2.5  # no reply (message or pong) for this long: not listening any more


class BroadcastCache(Generic[V]):
    def __init__(
        self,
        redis: RedisService,
        channel: str,
        *,
        max_age_s: float = 30.0,
        unsubscribed_max_age_s: float = 1.0,
        max_entries: int = 10_000,
    ) -> None:
        self.redis = redis
        self.channel = redis.key(channel)
        self.max_age_s = max_age_s
        self.unsubscribed_max_age_s = unsubscribed_max_age_s
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, V]] = {}
        self._subscribed = False
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.hits = 0
        self.misses = 0

    @property
    def subscribed(self) -> bool:
        return self._subscribed

    def get(self, key: str) -> V | None:
        found = self._entries.get(key)
        if found is not None:
            stored_at, value = found
            trusted = self._subscribed and self.redis.available
            limit = self.max_age_s if trusted else self.unsubscribed_max_age_s
            if time.monotonic() - stored_at < limit:
                self.hits += 1
                return value
            self._entries.pop(key, None)
        self.misses += 1
        return None

    def put(self, key: str, value: V) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()  # bounded; a refill costs one read per key
        self._entries[key] = (time.monotonic(), value)

    async def invalidate(self, key: str) -> None:
        """Drop `key` here at once and, through Redis, in every subscribed process."""
        self._entries.pop(key, None)
        try:
            await self.redis.call(lambda r: r.publish(self.channel, key.encode("utf-8")))
        except RedisUnavailable:
            # Redis is down: the others' subscriptions are too, so they serve what they
            # hold for a second at most, and drop it all when they subscribe again.
            log.warning("broadcast_invalidation_not_sent", channel=self.channel)

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name=f"broadcast:{self.channel}")

    async def close(self) -> None:
        self._closing = True
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        # A cancellation that lands just as redis-py's read timeout fires can be turned
        # into a TimeoutError (asyncio.timeout on Python 3.11) and lost: the loop also
        # checks `_closing`, so it ends at its next turn; never wait on it for ever.
        done, _ = await asyncio.wait({task}, timeout=3.0)
        if not done:
            task.cancel()
            log.warning("broadcast_listener_not_stopped", channel=self.channel)

    async def _listen(self) -> None:
        delay = 0.1
        while not self._closing:
            client = self.redis.dedicated_client()
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                # Whatever changed while we were not listening, we did not hear.
                self._entries.clear()
                self._subscribed = True
                delay = 0.1
                heard = pinged = time.monotonic()
                while not self._closing:
                    message = await pubsub.get_message(timeout=_PING_EVERY_S)
                    now = time.monotonic()
                    if message is not None:
                        heard = now
                        data = message.get("data")
                        if message.get("type") == "message" and isinstance(data, bytes):
                            self._entries.pop(data.decode("utf-8", "replace"), None)
                    # A frozen server sends nothing and refuses nothing: only a PING that
                    # goes unanswered tells us we would not hear an invalidation either.
                    if now - heard > _DEAF_AFTER_S:
                        raise ConnectionError("no pong from redis")
                    if now - pinged >= _PING_EVERY_S:
                        pinged = now
                        await pubsub.ping()
            except (RedisError, OSError, ConnectionError, TimeoutError) as exc:
                if self._subscribed:
                    log.warning(
                        "broadcast_unsubscribed", channel=self.channel, error=type(exc).__name__
                    )
            finally:
                self._subscribed = False
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pubsub.aclose(), timeout=1.0)  # type: ignore[no-untyped-call]
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.aclose(), timeout=1.0)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RECONNECT_MAX_S)
