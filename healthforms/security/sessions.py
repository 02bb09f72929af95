"""Server-side sessions in Redis, addressed by a signed cookie.

- The session id is 256 random bits. Redis only ever sees a hash of it (the first 128
  bits of SHA-256, base64url): a copy of Redis yields no usable cookie.
- The cookie is `<session_id>.<user_id>.<issued_ms>.<org_id>.<flags>.<hmac>`. The user id
  names the keys (all under the `{<user_id>}` hash tag, so one script reaches session,
  CSRF token and rate bucket in one Cluster slot); issued-at, organisation and role let
  the degraded mode (Redis down) judge a cookie on its own, up to its absolute lifetime.
- Keys: `session:{<user_id>}:<hash>` (a small hash: created, last seen, IP, user agent,
  method; sliding idle TTL capped by the absolute end) and `sessions:{<user_id>}` (a
  ZSET index hash -> absolute end, TTL = the latest end). Every field stays under 64 bytes
  so the hash keeps its listpack encoding (see bench/sessions.py for bytes per session).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from healthforms.config import Settings
from healthforms.identity.models import Role
from healthforms.redis.client import RedisService
from healthforms.redis.scripts import LuaScript

SESSION_KEY = "session:{{{user_id}}}:{session_hash}"
SESSION_INDEX_KEY = "sessions:{{{user_id}}}"
MAX_SESSIONS_PER_USER = 50
MAX_COOKIE_LENGTH = 400
UA_LIMIT = 48  # keeps the record's fields short (listpack) and the record under 300 B

CREATE_SCRIPT = LuaScript.beside(__file__, "session_create.lua")
END_SCRIPT = LuaScript.beside(__file__, "session_end.lua")
LIST_SCRIPT = LuaScript.beside(__file__, "session_list.lua")

_ROLE_FLAG = {Role.ADMIN: "a", Role.EDITOR: "e", Role.VIEWER: "v"}
_FLAG_ROLE = {flag: role for role, flag in _ROLE_FLAG.items()}
_METHOD_FLAG = {"password": "p", "oidc": "o"}
_FLAG_METHOD = {flag: method for method, flag in _METHOD_FLAG.items()}

_ID = r"[A-Za-z0-9_-]"
_COOKIE_RE = re.compile(
    rf"^({_ID}{{43}})\.({_ID}{{1,40}})\.(\d{{13}})\.({_ID}{{1,40}})\.([aev][po][01])\.({_ID}{{43}})$"
)


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def hash_session_id(session_id: str) -> str:
    """What Redis stores instead of the id: 128 bits of SHA-256, base64url (22 chars)."""
    return b64url(hashlib.sha256(session_id.encode("ascii")).digest()[:16])


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


@dataclass(frozen=True, slots=True)
class SessionCookie:
    """What the signed cookie carries; trustworthy only after `decode_cookie` checked it."""

    session_id: str
    user_id: str
    issued_ms: int
    organization_id: str
    role: Role
    auth_method: str
    mfa: bool
    session_hash: str = field(init=False, repr=False)  # what Redis knows the session by

    def __post_init__(self) -> None:
        object.__setattr__(self, "session_hash", hash_session_id(self.session_id))

    def payload(self) -> str:
        flags = _ROLE_FLAG[self.role] + _METHOD_FLAG[self.auth_method] + ("1" if self.mfa else "0")
        return f"{self.session_id}.{self.user_id}.{self.issued_ms}.{self.organization_id}.{flags}"


def _mac(key: bytes, payload: str) -> str:
    return b64url(hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest())


def encode_cookie(key: bytes, cookie: SessionCookie) -> str:
    payload = cookie.payload()
    return f"{payload}.{_mac(key, payload)}"


def decode_cookie(key: bytes, value: str | None) -> SessionCookie | None:
    """The cookie's contents if its HMAC holds; None for anything else (never raises)."""
    if not value or len(value) > MAX_COOKIE_LENGTH:
        return None
    match = _COOKIE_RE.match(value)
    if match is None:
        return None
    payload, _, mac = value.rpartition(".")
    # Constant-time compare: a forger learns nothing from how fast a guess fails.
    if not hmac.compare_digest(mac, _mac(key, payload)):
        return None
    sid, user_id, issued, org, flags, _ = match.groups()
    return SessionCookie(
        session_id=sid,
        user_id=user_id,
        issued_ms=int(issued),
        organization_id=org,
        role=_FLAG_ROLE[flags[0]],
        auth_method=_FLAG_METHOD[flags[1]],
        mfa=flags[2] == "1",
    )


def new_session_id() -> str:
    return b64url(secrets.token_bytes(32))


def short_user_agent(user_agent: str | None) -> str:
    """A short, readable label ("Firefox on Linux") that fits a compact Redis field."""
    if not user_agent:
        return ""
    ua = user_agent
    browser = ""
    for marker, name in (
        ("Edg/", "Edge"),
        ("OPR/", "Opera"),
        ("Firefox/", "Firefox"),
        ("Chrome/", "Chrome"),
        ("Version/", "Safari"),
    ):
        if marker in ua:
            browser = name
            major = ua.split(marker, 1)[1].split(".", 1)[0].split(" ", 1)[0]
            if major.isdigit():
                browser = f"{name} {major}"
            break
    system = ""
    for marker, name in (
        ("Windows", "Windows"),
        ("iPhone", "iPhone"),
        ("iPad", "iPad"),
        ("Android", "Android"),
        ("Mac OS X", "macOS"),
        ("CrOS", "ChromeOS"),
        ("Linux", "Linux"),
    ):
        if marker in ua:
            system = name
            break
    if browser and system:
        label = f"{browser} on {system}"
    elif browser or system:
        label = browser or system
    else:
        label = ua
    return "".join(ch for ch in label if ch.isprintable())[:UA_LIMIT]


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One live session as the API shows it (no secret in here)."""

    id: str  # the session hash: public, cannot be turned back into the cookie
    created_ms: int
    last_seen_ms: int
    ip: str
    user_agent: str
    auth_method: str
    expires_in_ms: int

    def expires_at(self, at_ms: int) -> datetime:
        return ms_to_datetime(at_ms + self.expires_in_ms)

    def to_json(self, *, current_hash: str | None = None) -> dict[str, Any]:
        from healthforms.identity.schemas import rfc3339

        body: dict[str, Any] = {
            "id": self.id,
            "createdAt": rfc3339(ms_to_datetime(self.created_ms)),
            "lastSeenAt": rfc3339(ms_to_datetime(self.last_seen_ms)),
            "ip": self.ip or None,
            "userAgent": self.user_agent or None,
        }
        if current_hash is not None:
            body["current"] = self.id == current_hash
        return body


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


class SessionStore:
    """Create, list and end sessions. Every call is one script, one round trip."""

    def __init__(self, redis: RedisService, settings: Settings, hmac_key: bytes) -> None:
        self.redis = redis
        self.settings = settings
        self.hmac_key = hmac_key

    # Keys -------------------------------------------------------------------------------

    def session_key(self, user_id: str, session_hash: str) -> str:
        return self.redis.key(SESSION_KEY.format(user_id=user_id, session_hash=session_hash))

    def index_key(self, user_id: str) -> str:
        return self.redis.key(SESSION_INDEX_KEY.format(user_id=user_id))

    def _prefixes(self, user_id: str) -> list[str]:
        tag = "{" + user_id + "}"
        return [
            self.redis.key(f"session:{tag}:"),
            self.redis.key(f"csrf:{tag}:"),
            self.redis.key(f"csrfs:{tag}:"),
        ]

    @property
    def idle_ms(self) -> int:
        return self.settings.session_idle_timeout * 1000

    @property
    def max_age_ms(self) -> int:
        return self.settings.session_max_age * 1000

    # Operations -------------------------------------------------------------------------

    async def create(
        self,
        *,
        user_id: str,
        organization_id: str,
        role: Role,
        auth_method: str,
        mfa: bool,
        ip: str | None,
        user_agent: str | None,
    ) -> tuple[str, SessionCookie, SessionInfo]:
        """Start a new session with a brand-new id; return (cookie value, cookie, info)."""
        cookie = SessionCookie(
            session_id=new_session_id(),
            user_id=user_id,
            issued_ms=now_ms(),
            organization_id=organization_id,
            role=role,
            auth_method=auth_method,
            mfa=mfa,
        )
        session_hash = cookie.session_hash
        ua = short_user_agent(user_agent)
        method = _METHOD_FLAG[auth_method] + ("m" if mfa else "")
        prefixes = self._prefixes(user_id)
        reply = await self.redis.pipelined(
            lambda r: CREATE_SCRIPT(
                r,
                keys=[self.session_key(user_id, session_hash), self.index_key(user_id)],
                args=[
                    session_hash,
                    (ip or "")[:45],
                    ua,
                    method,
                    self.idle_ms,
                    self.max_age_ms,
                    MAX_SESSIONS_PER_USER,
                    *prefixes,
                ],
            )
        )
        created_ms, expires_in_ms = int(reply[0]), int(reply[1])
        info = SessionInfo(
            id=session_hash,
            created_ms=created_ms,
            last_seen_ms=created_ms,
            ip=(ip or "")[:45],
            user_agent=ua,
            auth_method=auth_method,
            expires_in_ms=expires_in_ms,
        )
        return encode_cookie(self.hmac_key, cookie), cookie, info

    async def end(self, user_id: str, session_hash: str) -> bool:
        """End one session of this user (and its CSRF tokens); return whether it was live."""
        if session_hash == "*":  # the script's "every session" marker is not an id
            return False
        return bool(await self._end(user_id, session_hash))

    async def end_all(self, user_id: str) -> int:
        """End every session of this user at once; return how many were live."""
        return await self._end(user_id, "*")

    async def _end(self, user_id: str, which: str) -> int:
        prefixes = self._prefixes(user_id)
        reply = await self.redis.pipelined(
            lambda r: END_SCRIPT(r, keys=[self.index_key(user_id)], args=[*prefixes, which]),
            idempotent=True,
        )
        return int(reply)

    async def list(self, user_id: str) -> list[SessionInfo]:
        reply = await self.redis.pipelined(
            lambda r: LIST_SCRIPT(
                r,
                keys=[self.index_key(user_id)],
                args=[self._prefixes(user_id)[0], self.max_age_ms],
            ),
            idempotent=True,
        )
        sessions = []
        for i in range(0, len(reply), 7):
            method = _text(reply[i + 5])
            sessions.append(
                SessionInfo(
                    id=_text(reply[i]),
                    created_ms=int(reply[i + 1]),
                    last_seen_ms=int(reply[i + 2]),
                    ip=_text(reply[i + 3]),
                    user_agent=_text(reply[i + 4]),
                    auth_method=_FLAG_METHOD.get(method[:1], "password"),
                    expires_in_ms=int(reply[i + 6]),
                )
            )
        sessions.sort(key=lambda s: s.created_ms, reverse=True)
        return sessions


def session_store(state: Any) -> SessionStore:
    """The store of a running app (cheap to build; kept in state.services)."""
    store = state.services.get("sessions")
    if store is None:
        store = SessionStore(state.redis, state.settings, state.keys.hmac_key("session"))
        state.services["sessions"] = store
    assert isinstance(store, SessionStore)
    return store
