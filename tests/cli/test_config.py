"""Configuration from the environment: production refuses laptop defaults; bad values stop."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from healthforms.config import ConfigError, Settings, load_settings
from healthforms.redis.embedded import EmbeddedRedis
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.support import legs
from tests.support.servers import REPO_ROOT, start_server

CONFIG_VARS = (
    "DATABASE_URL",
    "REDIS_URL",
    "REDIS_ADDR",
    "REDIS_PASSWORD",
    "REDIS_USERNAME",
    "HEALTHFORMS_ENV",
    "HEALTHFORMS_ENCRYPTION_KEY",
    "HEALTHFORMS_TRUSTED_PROXIES",
    "HEALTHFORMS_RATE_LIMIT_AUTH",
    "HEALTHFORMS_RATE_LIMIT_API",
    "HEALTHFORMS_RATE_LIMIT_PDF",
    "HEALTHFORMS_RATE_LIMIT_PUBLIC",
    "HEALTHFORMS_DATA_DIR",
    "HEALTHFORMS_PUBLIC_URL",
    "HEALTHFORMS_REDIS_TLS",
    "HEALTHFORMS_ALLOW_INSECURE_REDIS",
    "HEALTHFORMS_LOG_LEVEL",
)
PG_URL = "postgresql+asyncpg://hf@db.internal:5432/hf"
PUBLIC_URL = "https://forms.clinic.example"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in CONFIG_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HEALTHFORMS_DATA_DIR", str(tmp_path / "data"))
    return monkeypatch


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in CONFIG_VARS}
    return subprocess.run(
        [sys.executable, "-m", "healthforms", *args],
        cwd=REPO_ROOT,
        env={**base, "PYTHONPATH": str(REPO_ROOT), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_production_names_every_missing_setting(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HEALTHFORMS_ENV", "production")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "DATABASE_URL" in message
    assert "REDIS_URL" in message and "REDIS_ADDR" in message
    assert "HEALTHFORMS_ENCRYPTION_KEY" in message
    assert "HEALTHFORMS_PUBLIC_URL" in message


@pytest.mark.parametrize(
    "missing",
    ["DATABASE_URL", "REDIS_URL", "HEALTHFORMS_ENCRYPTION_KEY", "HEALTHFORMS_PUBLIC_URL"],
)
def test_production_names_exactly_the_one_missing(
    clean_env: pytest.MonkeyPatch, missing: str
) -> None:
    values = {
        "HEALTHFORMS_ENV": "production",
        "DATABASE_URL": PG_URL,
        "REDIS_URL": "rediss://:pw@redis.internal:6380/0",
        "HEALTHFORMS_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
        "HEALTHFORMS_PUBLIC_URL": PUBLIC_URL,
    }
    del values[missing]
    for name, value in values.items():
        clean_env.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert missing in message
    for present in set(values) - {missing, "HEALTHFORMS_ENV"}:
        assert present not in message  # only the missing one is named


def test_production_accepts_redis_addr_and_password(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HEALTHFORMS_ENV", "production")
    clean_env.setenv("DATABASE_URL", PG_URL)
    clean_env.setenv("HEALTHFORMS_ENCRYPTION_KEY", TEST_ENCRYPTION_KEY)
    clean_env.setenv("HEALTHFORMS_PUBLIC_URL", PUBLIC_URL)
    clean_env.setenv("REDIS_ADDR", "redis.internal:6379")
    clean_env.setenv("REDIS_PASSWORD", "operator-secret")
    clean_env.setenv("HEALTHFORMS_REDIS_TLS", "true")
    settings = load_settings()
    assert settings.is_production
    assert settings.explicit_redis_url() == "rediss://redis.internal:6379/0"
    assert settings.redis_password is not None
    assert settings.redis_password.get_secret_value() == "operator-secret"
    assert "operator-secret" not in repr(settings)


def test_development_needs_nothing(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.uses_embedded_default
    assert settings.resolved_database_url().startswith("sqlite+aiosqlite:///")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("HEALTHFORMS_RATE_LIMIT_AUTH", "five per minute"),
        ("HEALTHFORMS_RATE_LIMIT_AUTH", "5/fortnight+2"),
        ("HEALTHFORMS_RATE_LIMIT_API", "0/min+1"),
        ("HEALTHFORMS_RATE_LIMIT_PUBLIC", "60/min+-3"),
        ("HEALTHFORMS_TRUSTED_PROXIES", "10.0.0.0/8,not-a-network"),
        ("HEALTHFORMS_TRUSTED_PROXIES", "300.1.1.1"),
        ("HEALTHFORMS_ENCRYPTION_KEY", "c2hvcnQ="),
        ("HEALTHFORMS_ENCRYPTION_KEY", "not base64 at all!!"),
    ],
)
def test_malformed_values_stop_start_up_naming_the_variable(
    clean_env: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    clean_env.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert variable in str(caught.value).upper()
    if variable == "HEALTHFORMS_ENCRYPTION_KEY":
        assert value not in str(caught.value)  # a (bad) secret is never echoed


def test_rate_limits_parse(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HEALTHFORMS_RATE_LIMIT_AUTH", "10/s+0")
    clean_env.setenv("HEALTHFORMS_TRUSTED_PROXIES", "10.0.0.0/8, 2001:db8::/32")
    settings = load_settings()
    assert settings.rate("auth").capacity == 10
    assert settings.rate("auth").period_s == 1.0
    assert settings.rate("public").capacity == 80
    assert settings.trusted_proxies == ["10.0.0.0/8", "2001:db8::/32"]


def test_create_app_refuses_production_without_settings(clean_env: pytest.MonkeyPatch) -> None:
    from healthforms.app import create_app

    clean_env.setenv("HEALTHFORMS_ENV", "production")
    with pytest.raises(ConfigError):
        create_app()
    with pytest.raises(ConfigError):
        create_app(Settings(HEALTHFORMS_ENV="production"))


def test_serve_in_production_exits_non_zero_naming_what_is_missing(tmp_path: Path) -> None:
    result = run_cli(
        "serve",
        "--port",
        "1",
        env={"HEALTHFORMS_ENV": "production", "HEALTHFORMS_DATA_DIR": str(tmp_path)},
    )
    assert result.returncode != 0
    for name in ("DATABASE_URL", "REDIS_URL", "HEALTHFORMS_ENCRYPTION_KEY"):
        assert name in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "redis").exists()  # refused before starting anything


def test_serve_with_a_malformed_rate_exits_non_zero_naming_it(tmp_path: Path) -> None:
    result = run_cli(
        "serve",
        env={"HEALTHFORMS_RATE_LIMIT_AUTH": "lots", "HEALTHFORMS_DATA_DIR": str(tmp_path)},
    )
    assert result.returncode != 0
    assert "HEALTHFORMS_RATE_LIMIT_AUTH" in result.stderr
    assert "Traceback" not in result.stderr


# Production and Redis: TLS, a password, and the public address (issue 12, item 15) ----------

SECRET = "s3cret-Redis-pw"


def production_env(clean_env: pytest.MonkeyPatch, **values: str) -> None:
    """Everything production wants, but Redis as given (REDIS_URL=..., REDIS_ADDR=...)."""
    base = {
        "HEALTHFORMS_ENV": "production",
        "DATABASE_URL": PG_URL,
        "HEALTHFORMS_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
        "HEALTHFORMS_PUBLIC_URL": PUBLIC_URL,
    }
    for name, value in {**base, **values}.items():
        clean_env.setenv(name, value)


@pytest.mark.parametrize(
    ("redis", "named"),
    [
        ({"REDIS_URL": f"redis://:{SECRET}@redis.internal:6379/0"}, "rediss://"),
        ({"REDIS_URL": f"redis://app:{SECRET}@redis.internal:6379/0"}, "rediss://"),
        (
            {"REDIS_ADDR": "redis.internal:6379", "REDIS_PASSWORD": SECRET},
            "HEALTHFORMS_REDIS_TLS=true",
        ),
    ],
)
def test_production_refuses_redis_without_tls(
    clean_env: pytest.MonkeyPatch, redis: dict[str, str], named: str
) -> None:
    production_env(clean_env, **redis)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    (variable,) = {"REDIS_URL", "REDIS_ADDR"} & set(redis)
    assert f"{variable} is not TLS" in message and named in message
    assert "HEALTHFORMS_ALLOW_INSECURE_REDIS=true" in message  # the escape hatch is named
    assert "no password" not in message  # it has one
    assert SECRET not in message


@pytest.mark.parametrize(
    "redis",
    [
        {"REDIS_URL": "rediss://redis.internal:6380/0"},
        {"REDIS_URL": "rediss://app@redis.internal:6380/0"},  # an ACL user needs a password
        {"REDIS_URL": "rediss://redis.internal:6380/0", "REDIS_PASSWORD": ""},
        {"REDIS_URL": "unix:///run/redis/redis.sock"},
        {"REDIS_ADDR": "redis.internal:6380", "HEALTHFORMS_REDIS_TLS": "true"},
    ],
)
def test_production_refuses_redis_without_a_password(
    clean_env: pytest.MonkeyPatch, redis: dict[str, str]
) -> None:
    production_env(clean_env, **redis)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    (variable,) = {"REDIS_URL", "REDIS_ADDR"} & set(redis)
    assert f"{variable} has no password" in message and "REDIS_PASSWORD" in message
    assert "not TLS" not in message  # TLS (or a local socket) is there


@pytest.mark.parametrize(
    "redis",
    [
        {"REDIS_URL": f"rediss://:{SECRET}@redis.internal:6380/0"},
        {"REDIS_URL": f"rediss://app:{SECRET}@redis.internal:6380/0"},
        {"REDIS_URL": "rediss://redis.internal:6380/0", "REDIS_PASSWORD": SECRET},
        {"REDIS_URL": "rediss://app@redis.internal:6380/0", "REDIS_PASSWORD": SECRET},
        {"REDIS_URL": f"unix:///run/redis/redis.sock?password={SECRET}"},
        {
            "REDIS_ADDR": "redis.internal:6380",
            "REDIS_PASSWORD": SECRET,
            "HEALTHFORMS_REDIS_TLS": "true",
        },
    ],
)
def test_production_accepts_tls_redis_with_a_password(
    clean_env: pytest.MonkeyPatch, redis: dict[str, str]
) -> None:
    production_env(clean_env, **redis)
    settings = load_settings()
    assert settings.is_production
    assert settings.redis_security_gaps() == []
    assert settings.startup_warnings() == []


@pytest.mark.parametrize("public_url", ["http://forms.clinic.example", "forms.clinic.example"])
def test_production_wants_the_https_public_url(
    clean_env: pytest.MonkeyPatch, public_url: str
) -> None:
    production_env(
        clean_env,
        REDIS_URL=f"rediss://:{SECRET}@redis.internal:6380/0",
        HEALTHFORMS_PUBLIC_URL=public_url,
    )
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "HEALTHFORMS_PUBLIC_URL" in str(caught.value) and "https://" in str(caught.value)


def test_allowing_insecure_redis_lets_it_through_with_a_warning_without_the_password(
    clean_env: pytest.MonkeyPatch,
) -> None:
    production_env(
        clean_env,
        REDIS_URL=f"redis://app:{SECRET}@10.0.0.5:6379/0",
        HEALTHFORMS_ALLOW_INSECURE_REDIS="true",
    )
    settings = load_settings()
    (warning,) = settings.startup_warnings()
    assert warning.event == "insecure_redis_allowed"
    assert "HEALTHFORMS_ALLOW_INSECURE_REDIS=true" in warning.message
    assert "REDIS_URL is not TLS" in warning.message
    assert SECRET not in warning.message and "10.0.0.5" not in warning.message
    # Nothing to warn about once Redis has TLS and a password.
    clean_env.setenv("REDIS_URL", f"rediss://app:{SECRET}@10.0.0.5:6379/0")
    assert load_settings().startup_warnings() == []


def test_allowing_insecure_redis_does_not_excuse_other_missing_settings(
    clean_env: pytest.MonkeyPatch,
) -> None:
    production_env(clean_env, REDIS_URL="redis://10.0.0.5:6379/0")
    clean_env.setenv("HEALTHFORMS_ALLOW_INSECURE_REDIS", "true")
    clean_env.delenv("HEALTHFORMS_PUBLIC_URL")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "HEALTHFORMS_PUBLIC_URL" in str(caught.value)
    assert "REDIS_URL" not in str(caught.value)


def test_external_stores_without_an_environment_warn(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DATABASE_URL", PG_URL)
    clean_env.setenv("REDIS_URL", f"redis://:{SECRET}@redis.internal:6379/0")
    (warning,) = load_settings().startup_warnings()
    assert warning.event == "environment_not_set"
    assert "HEALTHFORMS_ENV" in warning.message and "DEVELOPMENT" in warning.message
    assert SECRET not in warning.message
    clean_env.setenv("HEALTHFORMS_ENV", "development")  # said on purpose: quiet
    assert load_settings().startup_warnings() == []


@pytest.mark.parametrize(
    "configured",
    [{}, {"DATABASE_URL": PG_URL}, {"REDIS_URL": "redis://127.0.0.1:6379/0"}],
)
def test_the_embedded_default_or_half_of_it_does_not_warn(
    clean_env: pytest.MonkeyPatch, configured: dict[str, str]
) -> None:
    for name, value in configured.items():
        clean_env.setenv(name, value)
    assert load_settings().startup_warnings() == []


@pytest.mark.parametrize(
    ("redis_url", "expected"),
    [
        (f"redis://:{SECRET}@127.0.0.1:1/0", "REDIS_URL is not TLS"),
        ("rediss://127.0.0.1:1/0", "REDIS_URL has no password"),
    ],
)
def test_serve_in_production_refuses_insecure_redis_naming_the_setting(
    tmp_path: Path, redis_url: str, expected: str
) -> None:
    result = run_cli(
        "serve",
        "--port",
        "1",
        env={
            "HEALTHFORMS_ENV": "production",
            "DATABASE_URL": PG_URL,
            "REDIS_URL": redis_url,
            "HEALTHFORMS_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
            "HEALTHFORMS_PUBLIC_URL": PUBLIC_URL,
            "HEALTHFORMS_DATA_DIR": str(tmp_path),
        },
    )
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_serve_in_production_with_insecure_redis_allowed_warns_without_the_password(
    tmp_path: Path, database_url: str
) -> None:
    with EmbeddedRedis.start(
        tmp_path / "redis", binary=legs.private_server_binary(), appendonly=False, password=SECRET
    ) as redis_server:
        env = {
            **dict.fromkeys(CONFIG_VARS),
            "HEALTHFORMS_ENV": "production",
            "DATABASE_URL": database_url,
            "REDIS_URL": f"redis://:{SECRET}@127.0.0.1:{redis_server.port}/0",
            "HEALTHFORMS_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
            "HEALTHFORMS_PUBLIC_URL": PUBLIC_URL,
            "HEALTHFORMS_ALLOW_INSECURE_REDIS": "true",
            "HEALTHFORMS_DATA_DIR": str(tmp_path / "data"),
            "HEALTHFORMS_LOG_LEVEL": "info",
        }
        server = start_server(env, tmp_path / "logs")
        try:
            health = httpx.get(f"{server.base_url}/health", timeout=5).json()
        finally:
            server.stop()
    assert health["redis"]["status"] == "connected"  # it did start, on that Redis
    log = server.log_text()
    assert "WARNING: HEALTHFORMS_ALLOW_INSECURE_REDIS=true" in log  # the line on stderr
    (event,) = [e for e in json_lines(log) if e.get("event") == "insecure_redis_allowed"]
    assert event["level"] == "warning"
    assert "REDIS_URL is not TLS" in event["message"]
    assert SECRET not in log


def test_serve_on_external_stores_without_an_environment_warns_loudly(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    env = {
        **dict.fromkeys(CONFIG_VARS),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "HEALTHFORMS_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
        "HEALTHFORMS_DATA_DIR": str(tmp_path / "data"),
        "HEALTHFORMS_LOG_LEVEL": "info",
    }
    server = start_server(env, tmp_path / "logs")
    server.stop()
    log = server.log_text()
    assert "WARNING: HEALTHFORMS_ENV is not set" in log  # the line on stderr
    (event,) = [e for e in json_lines(log) if e.get("event") == "environment_not_set"]
    assert event["level"] == "warning" and "DEVELOPMENT" in event["message"]


def json_lines(text: str) -> list[dict[str, Any]]:
    events = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                events.append(record)
    return events
