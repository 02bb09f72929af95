"""CSRF protection: synchronizer tokens bound to one session, behind origin checks.

Token = `<id>.<expiry_s>.<HMAC(session_hash, id, expiry)>`.
- Redis holds `csrf:{<user_id>}:<id>` = the session hash for 4 hours; the session's
  `csrfs:{<user_id>}:<session_hash>` ZSET lists its live ids (cap, logout).
- Handing out a token never revokes another one of the same session (several tabs, and
  the old bug where a second fetch broke every save); at the cap the newest live token is
  handed out again instead of minting more.
- The HMAC binds a token to its session: another session's token (even the same user's)
  fails before Redis is asked. With Redis down the HMAC and expiry are all that is checked.
- In front of the token: Fetch Metadata (`Sec-Fetch-Site: cross-site` is refused) and the
  Origin header, which must be the service's own origin even when the token is valid.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from healthforms.redis.client import RedisService
from healthforms.redis.scripts import LuaScript
from healthforms.security.sessions import SESSION_KEY, b64url

CSRF_KEY = "csrf:{{{user_id}}}:{token_id}"
CSRF_INDEX_KEY = "csrfs:{{{user_id}}}:{session_hash}"
TOKEN_LIFETIME_S = 4 * 3600
MAX_TOKENS_PER_SESSION = 16
MAX_TOKEN_LENGTH = 100
HEADER = b"x-csrf-token"
FORM_FIELD = "csrf_token"

# Rejection reasons (logged and audited; never the token itself).
REASON_CROSS_SITE = "cross-site request (Sec-Fetch-Site)"
REASON_BAD_ORIGIN = "origin is not this service"
REASON_MISSING = "csrf token missing"
REASON_MALFORMED = "csrf token malformed or expired"
REASON_NOT_LIVE = "csrf token not live for this session"

ISSUE_SCRIPT = LuaScript.beside(__file__, "csrf_issue.lua")

_TOKEN_RE = re.compile(r"^([A-Za-z0-9_-]{22})\.(\d{10,11})\.([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True, slots=True)
class CheckedToken:
    """A token whose HMAC holds for the session it was checked against."""

    token_id: str
    expires_s: int


# Statuses of csrf_issue.lua.
ISSUE_NO_SESSION, ISSUE_NEW, ISSUE_AGAIN = 0, 1, 2


class CsrfIssue(NamedTuple):
    """The reply of csrf_issue.lua, by name."""

    status: int  # ISSUE_NEW, ISSUE_AGAIN (the cap is reached) or ISSUE_NO_SESSION
    token_id: str = ""  # ISSUE_AGAIN: the newest live token's id, handed out again
    expires_ms: int = 0  # the token's expiry (unix ms, whole seconds); 0: no session

    @classmethod
    def from_reply(cls, reply: Sequence[Any]) -> CsrfIssue:
        status = int(reply[0])
        if status == ISSUE_NO_SESSION:
            return cls(ISSUE_NO_SESSION)
        if status == ISSUE_AGAIN:
            token_id = reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1])
            return cls(status=ISSUE_AGAIN, token_id=token_id, expires_ms=int(reply[2]))
        return cls(status=status, expires_ms=int(reply[1]))


def _mac(key: bytes, session_hash: str, token_id: str, expires_s: int) -> str:
    message = f"{session_hash}|{token_id}|{expires_s}".encode("ascii")
    return b64url(hmac.new(key, message, hashlib.sha256).digest())


def make_token(key: bytes, session_hash: str, token_id: str, expires_s: int) -> str:
    return f"{token_id}.{expires_s}.{_mac(key, session_hash, token_id, expires_s)}"


def check_token(
    key: bytes, session_hash: str, token: str | None, *, now_s: float | None = None
) -> CheckedToken | None:
    """The token's id if it was made for this session and has not expired; else None."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    match = _TOKEN_RE.match(token)
    if match is None:
        return None
    token_id, expires, mac = match.group(1), int(match.group(2)), match.group(3)
    if not hmac.compare_digest(mac, _mac(key, session_hash, token_id, expires)):
        return None
    if expires <= (time.time() if now_s is None else now_s):
        return None
    return CheckedToken(token_id=token_id, expires_s=expires)


class CsrfTokens:
    """Issue tokens for a live session (one script) and name their keys."""

    def __init__(self, redis: RedisService, hmac_key: bytes) -> None:
        self.redis = redis
        self.hmac_key = hmac_key

    def token_key(self, user_id: str, token_id: str) -> str:
        return self.redis.key(CSRF_KEY.format(user_id=user_id, token_id=token_id))

    def index_key(self, user_id: str, session_hash: str) -> str:
        return self.redis.key(CSRF_INDEX_KEY.format(user_id=user_id, session_hash=session_hash))

    async def issue(self, user_id: str, session_hash: str) -> str | None:
        """A valid token for this session (None when the session is not live)."""
        token_id = b64url(secrets.token_bytes(16))
        session_key = self.redis.key(SESSION_KEY.format(user_id=user_id, session_hash=session_hash))
        reply = await self.redis.pipelined(
            lambda r: ISSUE_SCRIPT(
                r,
                keys=[
                    session_key,
                    self.index_key(user_id, session_hash),
                    self.token_key(user_id, token_id),
                ],
                args=[session_hash, token_id, TOKEN_LIFETIME_S * 1000, MAX_TOKENS_PER_SESSION],
            )
        )
        issued = CsrfIssue.from_reply(reply)
        if issued.status == ISSUE_NO_SESSION:
            return None
        if issued.status == ISSUE_AGAIN:
            token_id = issued.token_id
        return make_token(self.hmac_key, session_hash, token_id, issued.expires_ms // 1000)

    def issue_offline(self, session_hash: str) -> str:
        """A token checked by HMAC alone, for degraded mode (Redis down)."""
        token_id = b64url(secrets.token_bytes(16))
        return make_token(
            self.hmac_key, session_hash, token_id, int(time.time()) + TOKEN_LIFETIME_S
        )

    async def remaining_ttl_ms(self, user_id: str, session_hash: str, token_id: str) -> int:
        """Remaining life of a token in Redis for this session, 0 when it is not live there."""
        key = self.token_key(user_id, token_id)

        async def read(r: object) -> tuple[object, int]:
            from redis.asyncio import Redis

            assert isinstance(r, Redis)
            async with r.pipeline(transaction=False) as pipe:
                pipe.get(key)
                pipe.pttl(key)
                value, ttl = await pipe.execute()
            return value, int(ttl)

        value, ttl = await self.redis.call(read, idempotent=True)
        if value is None or value != session_hash.encode():
            return 0
        return max(0, ttl)


# Origin checks ------------------------------------------------------------------------

_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalise_origin(value: str) -> str | None:
    """`scheme://host[:port]` lower-cased with the default port dropped; None if unusable."""
    try:
        parts = urlsplit(value.strip())
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        return None
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def request_origin(scheme: str, host_header: str | None, server: tuple[str, int] | None) -> str:
    """The origin this request was made to (scheme + Host header, else the socket)."""
    if host_header:
        own = normalise_origin(f"{scheme}://{host_header}")
        if own is not None:
            return own
    if server:
        own = normalise_origin(f"{scheme}://{server[0]}:{server[1]}")
        if own is not None:
            return own
    return ""


def origin_rejection(
    *,
    sec_fetch_site: str | None,
    origin: str | None,
    own_origin: str,
) -> str | None:
    """The reason to refuse an unsafe request on origin grounds, or None to go on."""
    # Fetch Metadata first: a browser says outright when another site sent the request.
    if sec_fetch_site is not None and sec_fetch_site.strip().lower() == "cross-site":
        return REASON_CROSS_SITE
    # Origin second: holds even when a valid token leaked to another site.
    if origin is not None:
        if origin.strip().lower() == "null":
            # Our pages send Referrer-Policy: no-referrer, so a browser posts their plain
            # HTML forms with `Origin: null`. It also says where the post came from in
            # Sec-Fetch-Site, which no page can set: believe "same-origin" only. A
            # sandboxed frame or data: URL elsewhere gets "cross-site" and stays refused.
            if sec_fetch_site is None or sec_fetch_site.strip().lower() != "same-origin":
                return REASON_BAD_ORIGIN
        elif normalise_origin(origin) != own_origin:
            return REASON_BAD_ORIGIN
    return None
