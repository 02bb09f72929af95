"""Configuration from the environment: production refuses laptop defaults; bad values stop."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from healthforms.config import ConfigError, Settings, load_settings
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.support.servers import REPO_ROOT

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
)
PG_URL = "postgresql+asyncpg://hf@db.internal:5432/hf"


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


@pytest.mark.parametrize("missing", ["DATABASE_URL", "REDIS_URL", "HEALTHFORMS_ENCRYPTION_KEY"])
def test_production_names_exactly_the_one_missing(
    clean_env: pytest.MonkeyPatch, missing: str
) -> None:
    values = {
        "HEALTHFORMS_ENV": "production",
        "DATABASE_URL": PG_URL,
        "REDIS_URL": "rediss://:pw@redis.internal:6380/0",
        "HEALTHFORMS_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
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
    clean_env.setenv("REDIS_ADDR", "redis.internal:6379")
    clean_env.setenv("REDIS_PASSWORD", "operator-secret")
    settings = load_settings()
    assert settings.is_production
    assert settings.explicit_redis_url() == "redis://redis.internal:6379/0"
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
