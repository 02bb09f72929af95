"""Settings from the environment, built once by create_app / the CLI, never at import time."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""


class Environment(StrEnum):
    PRODUCTION = "production"
    DEVELOPMENT = "development"


class SmtpSecurity(StrEnum):
    STARTTLS = "starttls"  # plain connection upgraded with STARTTLS (port 587)
    TLS = "tls"  # TLS from the first byte (port 465)
    NONE = "none"  # no TLS: a relay on localhost or in tests; refused in production


class SessionFallback(StrEnum):
    ALLOW = "allow"  # Redis down: accept a signed cookie up to its limits
    DENY = "deny"  # Redis down: refuse sessions (fail closed)


_PERIODS = {"s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "hour": 3600.0}
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*([a-z]+)\s*(?:\+\s*(\d+)\s*)?$")


@dataclass(frozen=True, slots=True)
class RateSpec:
    """`rate/period + burst`: rate + burst requests at once, then `rate` per period."""

    rate: int
    period_s: float
    burst: int

    @property
    def capacity(self) -> int:
        return self.rate + self.burst

    @property
    def emission_interval_ms(self) -> float:
        return self.period_s * 1000.0 / self.rate

    def __str__(self) -> str:
        unit = {1.0: "s", 60.0: "min", 3600.0: "h"}.get(self.period_s, f"{self.period_s}s")
        return f"{self.rate}/{unit}+{self.burst}"


def parse_rate(value: str) -> RateSpec:
    """Parse `5/min+2` (also /s, /h); raise ValueError naming what is wrong."""
    match = _RATE_RE.match(value.lower())
    if not match or match.group(2) not in _PERIODS:
        raise ValueError(f"expected <rate>/<s|min|h>+<burst>, e.g. 5/min+2, got {value!r}")
    rate, burst = int(match.group(1)), int(match.group(3) or 0)
    if rate < 1 or rate > 1_000_000 or burst > 1_000_000:
        raise ValueError(f"rate must be 1..1000000 and burst 0..1000000, got {value!r}")
    return RateSpec(rate=rate, period_s=_PERIODS[match.group(2)], burst=burst)


DEFAULT_RATES = {
    "auth": "5/min+2",
    "api": "100/min+10",
    "pdf": "10/min+2",
    "public": "60/min+20",
    # Requests that carry no valid session (outside the auth and public paths): a flood
    # of garbage cookies or foreign Origins is refused early and cheaply (per IP).
    "anonymous": "30/min+10",
    # Typing a saved draft's code (submissions/drafts/): per client address, and per
    # form across every client, so a 50-bit code cannot be guessed by trying.
    "draft_code": "5/min+5",
    "draft_code_form": "60/min+20",
}


def _env(name: str) -> Any:
    return Field(default=None, validation_alias=AliasChoices(name))


class Settings(BaseSettings):
    """Every variable of API.md "Command line and configuration", plus operational knobs."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, populate_by_name=True)

    data_dir: Path = Field(
        default=Path("./healthforms-data"), validation_alias=AliasChoices("HEALTHFORMS_DATA_DIR")
    )
    env: Environment | None = Field(default=None, validation_alias=AliasChoices("HEALTHFORMS_ENV"))
    database_url: str | None = _env("DATABASE_URL")
    redis_url: SecretStr | None = _env("REDIS_URL")
    redis_addr: str | None = _env("REDIS_ADDR")
    redis_password: SecretStr | None = _env("REDIS_PASSWORD")
    redis_username: str | None = _env("REDIS_USERNAME")
    redis_ca_file: Path | None = _env("HEALTHFORMS_REDIS_CA_FILE")
    redis_tls: bool = Field(default=False, validation_alias=AliasChoices("HEALTHFORMS_REDIS_TLS"))
    # Production needs TLS and a password to Redis; this lets a plain or unauthenticated
    # Redis on a private network through, with a warning at every start.
    allow_insecure_redis: bool = Field(
        default=False, validation_alias=AliasChoices("HEALTHFORMS_ALLOW_INSECURE_REDIS")
    )
    redis_server_bin: str | None = _env("HEALTHFORMS_REDIS_SERVER_BIN")
    # Topologies (docs/redis-topologies.md): Sentinel (a redis+sentinel:// REDIS_URL, or
    # these two) and Cluster (REDIS_URL is a seed node, or a comma list of node URLs).
    redis_sentinels: str | None = _env("HEALTHFORMS_REDIS_SENTINELS")
    redis_sentinel_service: str | None = _env("HEALTHFORMS_REDIS_SENTINEL_SERVICE")
    redis_sentinel_username: str | None = _env("HEALTHFORMS_REDIS_SENTINEL_USERNAME")
    redis_sentinel_password: SecretStr | None = _env("HEALTHFORMS_REDIS_SENTINEL_PASSWORD")
    redis_cluster: bool = Field(
        default=False, validation_alias=AliasChoices("HEALTHFORMS_REDIS_CLUSTER")
    )
    redis_prefix: str = Field(
        default="hf:", validation_alias=AliasChoices("HEALTHFORMS_REDIS_PREFIX")
    )
    redis_pool_size: int = Field(
        default=32, ge=1, le=1024, validation_alias=AliasChoices("HEALTHFORMS_REDIS_POOL_SIZE")
    )
    redis_timeout_s: float = Field(
        default=0.5, gt=0, le=30, validation_alias=AliasChoices("HEALTHFORMS_REDIS_TIMEOUT")
    )
    encryption_key: SecretStr | None = _env("HEALTHFORMS_ENCRYPTION_KEY")
    previous_encryption_keys: SecretStr | None = _env("HEALTHFORMS_PREVIOUS_ENCRYPTION_KEYS")
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=AliasChoices("HEALTHFORMS_TRUSTED_PROXIES")
    )
    trusted_proxy_hops: int = Field(
        default=1, ge=1, le=10, validation_alias=AliasChoices("HEALTHFORMS_TRUSTED_PROXY_HOPS")
    )
    rate_limit_auth: str = Field(
        default=DEFAULT_RATES["auth"], validation_alias=AliasChoices("HEALTHFORMS_RATE_LIMIT_AUTH")
    )
    rate_limit_api: str = Field(
        default=DEFAULT_RATES["api"], validation_alias=AliasChoices("HEALTHFORMS_RATE_LIMIT_API")
    )
    rate_limit_pdf: str = Field(
        default=DEFAULT_RATES["pdf"], validation_alias=AliasChoices("HEALTHFORMS_RATE_LIMIT_PDF")
    )
    rate_limit_public: str = Field(
        default=DEFAULT_RATES["public"],
        validation_alias=AliasChoices("HEALTHFORMS_RATE_LIMIT_PUBLIC"),
    )
    rate_limit_anonymous: str = Field(
        default=DEFAULT_RATES["anonymous"],
        validation_alias=AliasChoices("HEALTHFORMS_RATE_LIMIT_ANONYMOUS"),
    )
    rate_limit_draft_code: str = Field(
        default=DEFAULT_RATES["draft_code"],
        validation_alias=AliasChoices("HEALTHFORMS_RATE_LIMIT_DRAFT_CODE"),
    )
    rate_limit_draft_code_form: str = Field(
        default=DEFAULT_RATES["draft_code_form"],
        validation_alias=AliasChoices("HEALTHFORMS_RATE_LIMIT_DRAFT_CODE_FORM"),
    )
    # How long a patient's saved draft lives after each save (submissions/drafts/).
    draft_ttl_hours: int = Field(
        default=72, ge=1, le=30 * 24, validation_alias=AliasChoices("HEALTHFORMS_DRAFT_TTL_HOURS")
    )
    session_max_age: int = Field(
        default=5 * 24 * 3600, ge=1, validation_alias=AliasChoices("HEALTHFORMS_SESSION_MAX_AGE")
    )
    session_idle_timeout: int = Field(
        default=30 * 60, ge=1, validation_alias=AliasChoices("HEALTHFORMS_SESSION_IDLE_TIMEOUT")
    )
    session_fallback: SessionFallback = Field(
        default=SessionFallback.ALLOW, validation_alias=AliasChoices("HEALTHFORMS_SESSION_FALLBACK")
    )
    public_url: str | None = _env("HEALTHFORMS_PUBLIC_URL")
    metrics_token: SecretStr | None = _env("HEALTHFORMS_METRICS_TOKEN")
    gotenberg_url: str | None = _env("GOTENBERG_URL")
    gotenberg_timeout_s: float = Field(
        default=30.0, gt=0, le=600, validation_alias=AliasChoices("HEALTHFORMS_GOTENBERG_TIMEOUT")
    )
    # Expensive PDFs (pdf/service.py). Rendering costs ~12 s of CPU per MiB of answer
    # text, so: the answers of one response are capped at submission (512 KiB: a long
    # intake form plus one 256 KiB signature); each render runs in a child process,
    # at most `pdf_render_processes` at once per service process, killed at its time
    # limit; and every full `pdf_cpu_seconds_per_token` of CPU a render used costs one
    # more `pdf` token of the user who asked for it.
    max_answers_bytes: int = Field(
        default=512 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        validation_alias=AliasChoices("HEALTHFORMS_MAX_ANSWERS_BYTES"),
    )
    pdf_render_timeout_s: float = Field(
        default=20.0, gt=0, le=600, validation_alias=AliasChoices("HEALTHFORMS_PDF_RENDER_TIMEOUT")
    )
    pdf_render_processes: int = Field(
        default=2, ge=1, le=64, validation_alias=AliasChoices("HEALTHFORMS_PDF_RENDER_PROCESSES")
    )
    pdf_cpu_seconds_per_token: float = Field(
        default=2.0,
        gt=0,
        le=600,
        validation_alias=AliasChoices("HEALTHFORMS_PDF_CPU_SECONDS_PER_TOKEN"),
    )
    oidc_issuer: str | None = _env("HEALTHFORMS_OIDC_ISSUER")
    oidc_jwks_url: str | None = _env("HEALTHFORMS_OIDC_JWKS_URL")
    oidc_audience: str | None = _env("HEALTHFORMS_OIDC_AUDIENCE")
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, validation_alias=AliasChoices("HEALTHFORMS_MAX_BODY_BYTES")
    )
    log_level: str = Field(default="info", validation_alias=AliasChoices("HEALTHFORMS_LOG_LEVEL"))
    # Audit checkpoints (audit/checkpoints.py): the signed chain heads, written outside
    # the database at this cadence; `audit verify` reads them back.
    audit_checkpoint_path: Path | None = _env("HEALTHFORMS_AUDIT_CHECKPOINT_PATH")
    audit_checkpoint_interval_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        validation_alias=AliasChoices("HEALTHFORMS_AUDIT_CHECKPOINT_INTERVAL"),
    )

    # Email (email/): alerts to staff and messages to patients, through the outbox
    # (outbox/). With no host, nothing is mailed: staff see alerts in their pages.
    smtp_host: str | None = _env("HEALTHFORMS_SMTP_HOST")
    smtp_port: int | None = Field(
        default=None, ge=1, le=65535, validation_alias=AliasChoices("HEALTHFORMS_SMTP_PORT")
    )
    smtp_security: SmtpSecurity = Field(
        default=SmtpSecurity.STARTTLS, validation_alias=AliasChoices("HEALTHFORMS_SMTP_SECURITY")
    )
    smtp_username: str | None = _env("HEALTHFORMS_SMTP_USERNAME")
    smtp_password: SecretStr | None = _env("HEALTHFORMS_SMTP_PASSWORD")
    smtp_from: str | None = _env("HEALTHFORMS_SMTP_FROM")
    smtp_timeout_s: float = Field(
        default=20.0, gt=0, le=300, validation_alias=AliasChoices("HEALTHFORMS_SMTP_TIMEOUT")
    )
    smtp_ca_file: Path | None = _env("HEALTHFORMS_SMTP_CA_FILE")
    # The outbox worker (outbox/worker.py) runs inside `serve` unless turned off here
    # (then `healthforms outbox work` runs it as a process of its own).
    outbox_worker: bool = Field(
        default=True, validation_alias=AliasChoices("HEALTHFORMS_OUTBOX_WORKER")
    )
    outbox_poll_s: float = Field(
        default=1.0, gt=0, le=60, validation_alias=AliasChoices("HEALTHFORMS_OUTBOX_POLL")
    )
    # A delivery still pending after this long is reclaimed by another worker
    # (XAUTOCLAIM); one being sent holds a lease of the SMTP timeout plus this.
    outbox_reclaim_s: float = Field(
        default=30.0, gt=0, le=3600, validation_alias=AliasChoices("HEALTHFORMS_OUTBOX_RECLAIM")
    )
    outbox_max_attempts: int = Field(
        default=8, ge=1, le=50, validation_alias=AliasChoices("HEALTHFORMS_OUTBOX_MAX_ATTEMPTS")
    )
    outbox_retry_base_s: float = Field(
        default=30.0, gt=0, le=3600, validation_alias=AliasChoices("HEALTHFORMS_OUTBOX_RETRY_BASE")
    )
    # Webhooks (webhooks/, docs/webhooks.md): sent by the outbox worker's process.
    # Retry n waits base * 2^(n-1) (at most the cap), +-20% jitter; after the last
    # attempt the delivery is dead. Defaults: 30 s, 6 h cap, 13 attempts = ~20 h.
    webhook_retry_base_s: float = Field(
        default=30.0, gt=0, le=3600, validation_alias=AliasChoices("HEALTHFORMS_WEBHOOK_RETRY_BASE")
    )
    webhook_retry_max_s: float = Field(
        default=6 * 3600.0,
        gt=0,
        le=86_400,
        validation_alias=AliasChoices("HEALTHFORMS_WEBHOOK_RETRY_MAX"),
    )
    webhook_max_attempts: int = Field(
        default=13, ge=1, le=50, validation_alias=AliasChoices("HEALTHFORMS_WEBHOOK_MAX_ATTEMPTS")
    )
    # The circuit per endpoint: after this many failures in a row it is not called for
    # the cool-down (its deliveries wait, spending no attempt), then once to probe.
    webhook_circuit_failures: int = Field(
        default=5,
        ge=1,
        le=1000,
        validation_alias=AliasChoices("HEALTHFORMS_WEBHOOK_CIRCUIT_FAILURES"),
    )
    webhook_circuit_cooldown_s: float = Field(
        default=300.0,
        gt=0,
        le=86_400,
        validation_alias=AliasChoices("HEALTHFORMS_WEBHOOK_CIRCUIT_COOLDOWN"),
    )
    webhook_connect_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=60,
        validation_alias=AliasChoices("HEALTHFORMS_WEBHOOK_CONNECT_TIMEOUT"),
    )
    # The whole call (connect, send, answer) ends after this.
    webhook_timeout_s: float = Field(
        default=15.0, gt=0, le=120, validation_alias=AliasChoices("HEALTHFORMS_WEBHOOK_TIMEOUT")
    )
    webhook_poll_s: float = Field(
        default=1.0, gt=0, le=60, validation_alias=AliasChoices("HEALTHFORMS_WEBHOOK_POLL")
    )
    # CA certificates trusted for receivers besides the system's (a clinic's own CA).
    webhook_ca_file: Path | None = _env("HEALTHFORMS_WEBHOOK_CA_FILE")
    # Hosts exempt from the production address checks (an EHR on the clinic's own
    # network), comma-separated, exact names. https is still required.
    webhook_allow_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=AliasChoices("HEALTHFORMS_WEBHOOK_ALLOW_HOSTS")
    )
    # The retention purge (retention/job.py): every process asks for each round of this
    # length (a day: UTC days), one per deployment runs it; 0 turns the job off (run
    # `healthforms purge` from a scheduler instead).
    purge_interval_s: float = Field(
        default=86_400.0,
        ge=0,
        le=31 * 86_400,
        validation_alias=AliasChoices("HEALTHFORMS_PURGE_INTERVAL_S"),
    )

    @field_validator("webhook_allow_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip().lower() for part in value.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ValueError(f"HEALTHFORMS_TRUSTED_PROXIES: {cidr!r} is not a CIDR") from exc
        return value

    @model_validator(mode="after")
    def _check_rates(self) -> Settings:
        for policy in DEFAULT_RATES:
            raw = getattr(self, f"rate_limit_{policy}")
            try:
                parse_rate(raw)
            except ValueError as exc:
                raise ValueError(f"HEALTHFORMS_RATE_LIMIT_{policy.upper()}: {exc}") from exc
        if self.encryption_key is not None:
            decode_key(self.encryption_key.get_secret_value(), "HEALTHFORMS_ENCRYPTION_KEY")
        return self

    # Derived views -------------------------------------------------------------------------

    @property
    def is_production(self) -> bool:
        return self.env is Environment.PRODUCTION

    @property
    def public_base(self) -> str:
        """The address links in emails and webhooks point at, without a trailing slash:
        HEALTHFORMS_PUBLIC_URL, else the local default (a worker has no request)."""
        return (self.public_url or "http://127.0.0.1:8000").rstrip("/")

    @property
    def uses_embedded_redis(self) -> bool:
        return self.redis_url is None and self.redis_addr is None and not self.redis_sentinels

    @property
    def redis_topology(self) -> str:
        """The topology: "standalone", "sentinel" or "cluster" (URL form and settings)."""
        url = self.explicit_redis_url()
        if url is None:
            return "standalone"
        return redis_topology_of(url, cluster=self.redis_cluster)

    @property
    def uses_embedded_default(self) -> bool:
        """No database and no Redis configured: the laptop mode of the README."""
        return self.database_url is None and self.uses_embedded_redis

    @property
    def secure_cookies(self) -> bool:
        return self.is_production

    @property
    def session_cookie_name(self) -> str:
        return "__Host-session" if self.secure_cookies else "session"

    @property
    def seen_cookie_name(self) -> str:
        """The signed last-seen time of the session (idle log-off while Redis is down)."""
        return "__Host-session-seen" if self.secure_cookies else "session-seen"

    def rate(self, policy: str) -> RateSpec:
        return parse_rate(getattr(self, f"rate_limit_{policy}"))

    @property
    def mail_enabled(self) -> bool:
        return bool(self.smtp_host)

    def resolved_smtp_port(self) -> int:
        if self.smtp_port is not None:
            return self.smtp_port
        return {SmtpSecurity.TLS: 465, SmtpSecurity.STARTTLS: 587}.get(self.smtp_security, 25)

    def resolved_audit_checkpoint_path(self) -> Path:
        return self.audit_checkpoint_path or self.data_dir / "audit-checkpoints.jsonl"

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'healthforms.db').resolve()}"

    def explicit_redis_url(self) -> str | None:
        """REDIS_URL, or `REDIS_ADDR` + `REDIS_PASSWORD` as the operators already set them."""
        if self.redis_url is not None:
            return self.redis_url.get_secret_value()
        if self.redis_sentinels:
            scheme = "rediss+sentinel" if self.redis_tls else "redis+sentinel"
            service = self.redis_sentinel_service or "mymaster"
            hosts = ",".join(part.strip() for part in self.redis_sentinels.split(",") if part)
            return f"{scheme}://{hosts}/{service}/0"
        if self.redis_addr is not None:
            scheme = "rediss" if self.redis_tls else "redis"
            return f"{scheme}://{self.redis_addr}/0"
        return None

    def check_production(self) -> None:
        """Refuse to run in production on laptop defaults; name every missing setting."""
        if not self.is_production:
            return
        missing = []
        if not self.database_url:
            missing.append("DATABASE_URL")
        if self.uses_embedded_redis:
            missing.append("REDIS_URL (or REDIS_ADDR + REDIS_PASSWORD)")
        if self.encryption_key is None:
            missing.append("HEALTHFORMS_ENCRYPTION_KEY")
        if not self.public_url:
            missing.append("HEALTHFORMS_PUBLIC_URL")
        problems = []
        if missing:
            problems.append(
                "HEALTHFORMS_ENV=production refuses to start without: " + ", ".join(missing)
            )
        if self.public_url and not _is_https_origin(self.public_url):
            problems.append(
                "HEALTHFORMS_PUBLIC_URL must be the https:// address browsers use in production"
            )
        if self.smtp_host and self.smtp_security is SmtpSecurity.NONE:
            problems.append(
                "HEALTHFORMS_SMTP_SECURITY=none in production: mail would cross the network "
                "in clear (use starttls or tls)"
            )
        if self.smtp_host and not self.smtp_from:
            problems.append("HEALTHFORMS_SMTP_FROM is required when HEALTHFORMS_SMTP_HOST is set")
        if not self.allow_insecure_redis:
            problems += [
                f"{gap} in production (on a private network, "
                "HEALTHFORMS_ALLOW_INSECURE_REDIS=true lets it through)"
                for gap in self.redis_security_gaps()
            ]
        if problems:
            raise ConfigError("; ".join(problems))

    def redis_security_gaps(self) -> list[str]:
        """What the configured Redis lacks: TLS, a password; each names its variable.

        Never quotes the URL: it may carry the password. A unix socket does not leave
        the host, so it needs no TLS, but a password all the same.
        """
        password = self.redis_password.get_secret_value() if self.redis_password else ""
        sentinel_gaps: list[str] = []
        if self.redis_url is not None or self.redis_sentinels:
            name = "REDIS_URL" if self.redis_url is not None else "HEALTHFORMS_REDIS_SENTINELS"
            raw = self.explicit_redis_url() or ""
            # A cluster's comma list of node URLs: every one must be TLS (and say a
            # password, unless REDIS_PASSWORD does).
            urls = [urlsplit(part.strip()) for part in _node_urls(raw)]
            encrypted = all(url.scheme in ("rediss", "unix", "rediss+sentinel") for url in urls)
            passwords = [
                url.password or parse_qs(url.query).get("password", [""])[0] for url in urls
            ]
            password = password if not all(passwords) else passwords[0]
            plain = f"{name} is not TLS: use rediss://"
            if urls and urls[0].scheme.endswith("+sentinel"):
                plain = (
                    "REDIS_URL is not TLS: use rediss+sentinel://"
                    if self.redis_url is not None
                    else f"{name} is not TLS: set HEALTHFORMS_REDIS_TLS=true"
                )
                if self.redis_sentinel_password is None:
                    sentinel_gaps.append(
                        "the Redis sentinels have no password: set "
                        "HEALTHFORMS_REDIS_SENTINEL_PASSWORD (the sentinels' requirepass)"
                    )
        elif self.redis_addr is not None:
            name = "REDIS_ADDR"
            encrypted = self.redis_tls
            plain = "REDIS_ADDR is not TLS: set HEALTHFORMS_REDIS_TLS=true"
        else:
            return []  # the embedded server: a private socket of this machine
        gaps = [] if encrypted else [plain]
        if not password:
            gaps.append(
                f"{name} has no password: set REDIS_PASSWORD or put it in REDIS_URL "
                "(with REDIS_USERNAME or a user in the URL for an ACL user)"
            )
        return gaps + sentinel_gaps

    def startup_warnings(self) -> list[StartupWarning]:
        """What start-up must say loudly: insecure Redis let through, no environment named."""
        warnings = []
        if self.is_production and self.allow_insecure_redis:
            gaps = self.redis_security_gaps()
            if gaps:
                warnings.append(
                    StartupWarning(
                        event="insecure_redis_allowed",
                        message="HEALTHFORMS_ALLOW_INSECURE_REDIS=true: "
                        + "; ".join(gaps)
                        + ". Only for a private network: whoever can reach or watch it "
                        "can read or change sessions, rate limits and locks.",
                    )
                )
        if self.env is None and self.database_url and not self.uses_embedded_redis:
            warnings.append(
                StartupWarning(
                    event="environment_not_set",
                    message="HEALTHFORMS_ENV is not set, but DATABASE_URL and Redis point at "
                    "servers of a real deployment: running with DEVELOPMENT defaults "
                    "(cookies without Secure, no HSTS, none of the production checks). "
                    "Set HEALTHFORMS_ENV=production (or =development to silence this).",
                )
            )
        return warnings


@dataclass(frozen=True, slots=True)
class StartupWarning:
    """A configuration that runs but must be said at start-up; never carries a secret."""

    event: str
    message: str


def _node_urls(value: str) -> list[str]:
    """A cluster's comma list of node URLs, one URL each (a sentinel URL stays whole:
    its commas separate sentinel hosts)."""
    if "+sentinel://" in value.split(",", 1)[0]:
        return [value]
    return [part for part in value.split(",") if part.strip()]


def redis_topology_of(url: str, *, cluster: bool = False) -> str:
    """The topology of `url`: "sentinel" for redis+sentinel:// (rediss+sentinel://), "cluster" with
    HEALTHFORMS_REDIS_CLUSTER=true or a comma list of node URLs, else "standalone"."""
    scheme = url.split("://", 1)[0].lower()
    if scheme.endswith("+sentinel"):
        return "sentinel"
    if cluster or len(_node_urls(url)) > 1:
        return "cluster"
    return "standalone"


def _is_https_origin(value: str) -> bool:
    try:
        url = urlsplit(value.strip())
        return url.scheme == "https" and bool(url.hostname) and url.port != 0
    except ValueError:
        return False


def decode_key(value: str, name: str) -> bytes:
    """Decode a base64 master key of exactly 32 bytes."""
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{name} is not valid base64") from exc
    if len(raw) != 32:
        raise ValueError(f"{name} must decode to 32 bytes, got {len(raw)}")
    return raw


# Every secret setting can come from a file instead (`<VARIABLE>_FILE`): container
# secrets (compose `secrets:`, Kubernetes secret volumes) are files, and a file keeps
# the secret out of the process environment, `ps e` and crash reports. Every SecretStr
# field is here (tests/cli/test_secret_files.py checks it), and DATABASE_URL, which
# carries the database password.
SECRET_FILE_VARIABLES = {
    "DATABASE_URL": "database_url",
    "REDIS_URL": "redis_url",
    "REDIS_PASSWORD": "redis_password",
    "HEALTHFORMS_ENCRYPTION_KEY": "encryption_key",
    "HEALTHFORMS_PREVIOUS_ENCRYPTION_KEYS": "previous_encryption_keys",
    "HEALTHFORMS_METRICS_TOKEN": "metrics_token",
    "HEALTHFORMS_SMTP_PASSWORD": "smtp_password",
    "HEALTHFORMS_REDIS_SENTINEL_PASSWORD": "redis_sentinel_password",
}
# A secret is a line or a PEM-sized blob; a larger file is a wrong path.
MAX_SECRET_FILE_BYTES = 64 * 1024


def secrets_from_files(environ: Mapping[str, str]) -> dict[str, str]:
    """The field values of the `*_FILE` variables set in `environ`, read from their files.

    Raise ConfigError naming the variable (never the file's content) when both the
    variable and its `_FILE` are set, or the file is unreadable, empty or too large.
    One trailing line break is dropped (`echo secret > file`); nothing else is changed.
    """
    upper = {name.upper(): value for name, value in environ.items()}
    values: dict[str, str] = {}
    problems: list[str] = []
    for variable, field_name in SECRET_FILE_VARIABLES.items():
        path_text = upper.get(f"{variable}_FILE")
        if path_text is None:
            continue
        if variable in upper:
            problems.append(f"{variable} and {variable}_FILE are both set: set only one")
            continue
        try:
            with open(path_text, "rb") as handle:
                raw = handle.read(MAX_SECRET_FILE_BYTES + 1)
        except OSError as exc:
            problems.append(
                f"{variable}_FILE: cannot read {path_text!r}: {exc.strerror or type(exc).__name__}"
            )
            continue
        if len(raw) > MAX_SECRET_FILE_BYTES:
            problems.append(f"{variable}_FILE: {path_text!r} is larger than 64 KiB")
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            problems.append(f"{variable}_FILE: {path_text!r} is not UTF-8 text")
            continue
        text = text.removesuffix("\n").removesuffix("\r")
        if not text.strip():
            problems.append(f"{variable}_FILE: {path_text!r} is empty")
            continue
        values[field_name] = text
    if problems:
        raise ConfigError("; ".join(problems))
    return values


def load_settings(**overrides: Any) -> Settings:
    """Build Settings from the environment (and the `*_FILE` secret files); raise
    ConfigError with the variable's name."""
    from pydantic import ValidationError

    from_files = secrets_from_files(os.environ)
    try:
        settings = Settings(**{**from_files, **overrides})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "settings"
            problems.append(f"{where}: {err['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
    settings.check_production()
    return settings
