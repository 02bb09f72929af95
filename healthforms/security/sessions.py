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

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from healthforms.clock import ms_to_datetime, now_ms, rfc3339
from healthforms.config import Settings
from healthforms.redis.client import RedisService
from healthforms.redis.scripts import LuaScript
from healthforms.security.principal import Role
from healthforms.security.ratelimit import bucket_key

SESSION_KEY = "session:{{{user_id}}}:{session_hash}"
SESSION_INDEX_KEY = "sessions:{{{user_id}}}"
MAX_SESSIONS_PER_USER = 50
MAX_COOKIE_LENGTH = 400
UA_LIMIT = 48  # keeps the record's fields short (listpack) and the record under 300 B

CHECK_SCRIPT = LuaScript.beside(__file__, "gcra.lua", "session_check.lua")
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


def encode_seen(key: bytes, session_hash: str, seen_ms: int) -> str:
    """The last-seen cookie: when this session was last active, signed and bound to it."""
    return f"{seen_ms}.{_mac(key, f'{session_hash}.{seen_ms}')[:22]}"


def seen_ms_of(value: str | None) -> int | None:
    """The time a last-seen cookie claims, unchecked (enough to decide a refresh)."""
    if not value or len(value) > 40:
        return None
    seen, _, _ = value.partition(".")
    return int(seen) if seen.isdigit() and len(seen) == 13 else None


def decode_seen(key: bytes, session_hash: str, value: str | None) -> int | None:
    """The time a last-seen cookie proves for this session, or None (never raises)."""
    seen_ms = seen_ms_of(value)
    if seen_ms is None or value is None:
        return None
    # Constant-time compare: a forger learns nothing from how fast a guess fails.
    expected = encode_seen(key, session_hash, seen_ms)
    return seen_ms if hmac.compare_digest(value, expected) else None


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
class UserStanding:
    """The database's word on a user's sessions. Every end of a session is written there
    as well as in Redis, so a session that ended stays ended while Redis is down and
    after an outage in which Redis never heard of the end."""

    disabled: bool
    sessions_valid_after_ms: int | None  # cookies issued before this are void
    revoked: frozenset[str] = frozenset()  # hashes of single sessions that were ended

    def accepts(self, cookie: SessionCookie) -> bool:
        if self.disabled or cookie.session_hash in self.revoked:
            return False
        valid_after = self.sessions_valid_after_ms
        return valid_after is None or cookie.issued_ms >= valid_after


# user id -> their standing, or None when no such user exists. identity/ implements it
# over its own table; the session layer only calls it (it never reads identity's models).
UserStandingLookup = Callable[[str], Awaitable[UserStanding | None]]


class Standings:
    """Each user's standing, asked of the database at most every `ttl_s` per user and
    process, never by two requests at once (one read serves every request waiting for
    it). The hot path reads it from memory and, once it is stale, goes on with the
    last one read while one refresh runs beside it; a refusal it finds is replayed into
    Redis by the session layer. `forget` drops a user's entry at once, after this
    process recorded an end of one of their sessions: the next request waits for a new
    read, and a read that began before the end is not kept."""

    def __init__(
        self, lookup: UserStandingLookup, *, ttl_s: float = 5.0, max_users: int = 10_000
    ) -> None:
        self._lookup = lookup
        self._ttl_s = ttl_s
        self._max_users = max_users
        self._known: dict[str, tuple[float, UserStanding | None]] = {}
        self._reading: dict[str, asyncio.Future[UserStanding | None]] = {}
        self._forgotten: dict[str, float] = {}  # user id -> when its entry was dropped

    def cached(self, user_id: str) -> tuple[bool, UserStanding | None]:
        """(fresh?, the standing last read): no I/O, for the hot path."""
        entry = self._known.get(user_id)
        if entry is None:
            return False, None
        return time.monotonic() - entry[0] <= self._ttl_s, entry[1]

    def is_known(self, user_id: str) -> bool:
        return user_id in self._known

    def read(self, user_id: str) -> asyncio.Future[UserStanding | None]:
        """The database's answer (raises when it does not answer), remembered; a read
        already under way for this user is shared."""
        pending = self._reading.get(user_id)
        if pending is None:
            pending = self._reading[user_id] = asyncio.ensure_future(self._read(user_id))
        return pending

    def refresh_soon(self, user_id: str) -> None:
        """Start a read beside the request (errors are kept for the next caller only)."""
        self.read(user_id).add_done_callback(_swallow)

    async def _read(self, user_id: str) -> UserStanding | None:
        started = time.monotonic()
        try:
            standing = await self._lookup(user_id)
        finally:
            self._reading.pop(user_id, None)
        if self._forgotten.get(user_id, float("-inf")) < started:
            if len(self._known) >= self._max_users:
                self._known.clear()
                self._forgotten.clear()
            self._known[user_id] = (time.monotonic(), standing)
        return standing

    async def accepts(self, cookie: SessionCookie, *, when_unknown: bool) -> bool:
        """Whether the database lets this cookie's session live. `when_unknown` answers
        when the database cannot be asked and nothing was read before."""
        fresh, standing = self.cached(cookie.user_id)
        if not fresh:
            try:
                standing = await asyncio.shield(self.read(cookie.user_id))
            except Exception:  # noqa: BLE001 - the database is away: the caller decides
                if cookie.user_id not in self._known:
                    return when_unknown
        return standing is not None and standing.accepts(cookie)

    def forget(self, user_id: str) -> None:
        self._known.pop(user_id, None)
        if len(self._forgotten) >= self._max_users:
            self._forgotten.clear()  # reads under way may then keep an older answer
        self._forgotten[user_id] = time.monotonic()


def _swallow(done: asyncio.Future[UserStanding | None]) -> None:
    if not done.cancelled():
        done.exception()  # retrieved: no "exception was never retrieved" warning


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


class SessionCheck(NamedTuple):
    """The reply of session_check.lua, by name."""

    status: int  # CHECK_OK, CHECK_NO_SESSION, CHECK_RATE_LIMITED or CHECK_CSRF_NOT_LIVE
    created_ms: int = 0
    last_seen_ms: int = 0
    ip: str = ""
    user_agent: str = ""
    api_bucket: tuple[int, int, int, int] = (1, 0, 0, 0)  # gcra: allowed, remaining, retry, reset
    expires_in_ms: int = 0

    @classmethod
    def from_reply(cls, reply: Sequence[Any]) -> SessionCheck:
        if int(reply[0]) == CHECK_NO_SESSION:
            return cls(CHECK_NO_SESSION)
        return cls(
            status=int(reply[0]),
            created_ms=int(reply[1]),
            last_seen_ms=int(reply[2]),
            ip=_text(reply[3]),
            user_agent=_text(reply[4]),
            api_bucket=(int(reply[5]), int(reply[6]), int(reply[7]), int(reply[8])),
            expires_in_ms=int(reply[9]),
        )

    def info(self, cookie: SessionCookie) -> SessionInfo:
        return SessionInfo(
            id=cookie.session_hash,
            created_ms=self.created_ms,
            last_seen_ms=self.last_seen_ms,
            ip=self.ip,
            user_agent=self.user_agent,
            auth_method=cookie.auth_method,
            expires_in_ms=self.expires_in_ms,
        )


CHECK_NO_SESSION, CHECK_OK, CHECK_RATE_LIMITED, CHECK_CSRF_NOT_LIVE = 0, 1, 2, 3


class SessionCreate(NamedTuple):
    """The reply of session_create.lua, by name."""

    created_ms: int  # the Redis clock when the record was written
    expires_in_ms: int  # the record's TTL: idle timeout, capped by the absolute lifetime

    @classmethod
    def from_reply(cls, reply: Sequence[Any]) -> SessionCreate:
        return cls(created_ms=int(reply[0]), expires_in_ms=int(reply[1]))


class SessionEnd(NamedTuple):
    """The reply of session_end.lua, by name."""

    ended: int  # how many live sessions were ended

    @classmethod
    def from_reply(cls, reply: Any) -> SessionEnd:
        return cls(int(reply))


class ListedSession(NamedTuple):
    """One live session in the reply of session_list.lua (7 values each), by name."""

    session_hash: str
    created_ms: int
    last_seen_ms: int
    ip: str
    user_agent: str
    method: str  # method flags: "p" password or "o" OIDC, then "m" with MFA
    expires_in_ms: int  # the record's remaining TTL

    @classmethod
    def from_reply(cls, reply: Sequence[Any], at: int = 0) -> ListedSession:
        """The session whose values start at `at` of the flat reply."""
        return cls(
            session_hash=_text(reply[at]),
            created_ms=int(reply[at + 1]),
            last_seen_ms=int(reply[at + 2]),
            ip=_text(reply[at + 3]),
            user_agent=_text(reply[at + 4]),
            method=_text(reply[at + 5]),
            expires_in_ms=int(reply[at + 6]),
        )

    @classmethod
    def each(cls, reply: Sequence[Any]) -> Iterator[ListedSession]:
        """Every session of the flat reply, in its order."""
        for at in range(0, len(reply), LISTED_SESSION_WIDTH):
            yield cls.from_reply(reply, at)

    def info(self) -> SessionInfo:
        return SessionInfo(
            id=self.session_hash,
            created_ms=self.created_ms,
            last_seen_ms=self.last_seen_ms,
            ip=self.ip,
            user_agent=self.user_agent,
            auth_method=_FLAG_METHOD.get(self.method[:1], "password"),
            expires_in_ms=self.expires_in_ms,
        )


LISTED_SESSION_WIDTH = len(ListedSession._fields)  # values per session in the reply


class SessionStore:
    """Create, list and end sessions. Every call is one script, one round trip."""

    def __init__(self, redis: RedisService, settings: Settings, hmac_key: bytes) -> None:
        self.redis = redis
        self.settings = settings
        self.hmac_key = hmac_key
        self.idle_ms = settings.session_idle_timeout * 1000
        self.max_age_ms = settings.session_max_age * 1000

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

    # Operations -------------------------------------------------------------------------

    def check(
        self,
        cookie: SessionCookie,
        *,
        csrf_key: str | None,
        take_api_token: bool,
        api_args: Sequence[int],
    ) -> Awaitable[Any]:
        """Check and touch the session, take an `api` token (take_api_token) and check
        that a CSRF token is live for it (csrf_key given): ONE round trip.

        Returns the pipelined call; read its reply with `SessionCheck.from_reply`.
        """
        user_id = cookie.user_id
        prefix = self.redis.prefix
        keys = [
            prefix + SESSION_KEY.format(user_id=user_id, session_hash=cookie.session_hash),
            bucket_key(prefix, user_id, "api"),
        ]
        if csrf_key is not None:
            keys.append(csrf_key)
        args = [
            self.idle_ms,
            self.max_age_ms,
            cookie.session_hash,
            1 if take_api_token else 0,
            *api_args,
            1 if csrf_key is not None else 0,
        ]
        return self.redis.pipelined(lambda r: CHECK_SCRIPT(r, keys=keys, args=args))

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
        created = SessionCreate.from_reply(reply)
        info = SessionInfo(
            id=session_hash,
            created_ms=created.created_ms,
            last_seen_ms=created.created_ms,
            ip=(ip or "")[:45],
            user_agent=ua,
            auth_method=auth_method,
            expires_in_ms=created.expires_in_ms,
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
        return SessionEnd.from_reply(reply).ended

    async def list(self, user_id: str) -> list[SessionInfo]:
        reply = await self.redis.pipelined(
            lambda r: LIST_SCRIPT(
                r,
                keys=[self.index_key(user_id)],
                args=[self._prefixes(user_id)[0], self.max_age_ms],
            ),
            idempotent=True,
        )
        sessions = [listed.info() for listed in ListedSession.each(reply)]
        sessions.sort(key=lambda s: s.created_ms, reverse=True)
        return sessions
