"""`*_FILE` variants of every secret setting: container secrets are files, not variables."""

from __future__ import annotations

import secrets
import typing
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from healthforms.config import (
    SECRET_FILE_VARIABLES,
    ConfigError,
    Settings,
    load_settings,
    secrets_from_files,
)
from tests.cli.test_config import CONFIG_VARS, clean_env  # noqa: F401 - fixture
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.support.servers import start_server

# A value each variable accepts, and how the loaded Settings shows it.
SAMPLES = {
    "DATABASE_URL": "postgresql+asyncpg://hf:s3cret-pw@db.internal:5432/hf",
    "REDIS_URL": "rediss://:s3cret-pw@redis.internal:6380/0",
    "REDIS_PASSWORD": "s3cret-pw with spaces",
    "HEALTHFORMS_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
    "HEALTHFORMS_PREVIOUS_ENCRYPTION_KEYS": f"{TEST_ENCRYPTION_KEY},{TEST_ENCRYPTION_KEY}",
    "HEALTHFORMS_METRICS_TOKEN": "metrics-token-123",
    "HEALTHFORMS_SMTP_PASSWORD": "smtp-pw",
    "HEALTHFORMS_REDIS_SENTINEL_PASSWORD": "sentinel-pw",
}
ALL_FILE_VARS = tuple(f"{name}_FILE" for name in SECRET_FILE_VARIABLES)


@pytest.fixture
def env(clean_env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:  # noqa: F811
    for name in (*SECRET_FILE_VARIABLES, *ALL_FILE_VARS):
        clean_env.delenv(name, raising=False)
    return clean_env


def _value(settings: Settings, field: str) -> str | None:
    value = getattr(settings, field)
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def test_every_secret_setting_has_a_file_variant() -> None:
    secret_fields = {
        name
        for name, info in Settings.model_fields.items()
        if SecretStr in typing.get_args(info.annotation) or info.annotation is SecretStr
    }
    assert secret_fields, "no SecretStr field found: the check would prove nothing"
    covered = set(SECRET_FILE_VARIABLES.values())
    assert secret_fields <= covered, f"secrets without a _FILE variant: {secret_fields - covered}"
    # Each variable's _FILE fills the field the variable itself fills.
    for variable, field in SECRET_FILE_VARIABLES.items():
        aliases = Settings.model_fields[field].validation_alias
        assert variable in getattr(aliases, "choices", [aliases]), (variable, field)


@pytest.mark.parametrize("variable", sorted(SECRET_FILE_VARIABLES))
def test_each_file_variant_gives_the_same_settings_as_the_variable(
    env: pytest.MonkeyPatch, tmp_path: Path, variable: str
) -> None:
    field = SECRET_FILE_VARIABLES[variable]
    env.setenv(variable, SAMPLES[variable])
    direct = _value(load_settings(), field)
    env.delenv(variable)
    secret_file = tmp_path / "secret"
    secret_file.write_text(SAMPLES[variable] + "\n")  # `echo value > file` adds a line break
    env.setenv(f"{variable}_FILE", str(secret_file))
    from_file = _value(load_settings(), field)
    assert direct == SAMPLES[variable]
    assert from_file == direct


def test_both_the_variable_and_its_file_are_refused(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret_file = tmp_path / "key"
    secret_file.write_text(TEST_ENCRYPTION_KEY)
    env.setenv("HEALTHFORMS_ENCRYPTION_KEY", TEST_ENCRYPTION_KEY)
    env.setenv("HEALTHFORMS_ENCRYPTION_KEY_FILE", str(secret_file))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "HEALTHFORMS_ENCRYPTION_KEY and HEALTHFORMS_ENCRYPTION_KEY_FILE are both set" in message
    assert TEST_ENCRYPTION_KEY not in message


@pytest.mark.parametrize("problem", ["missing", "directory", "empty", "too_large", "binary"])
def test_an_unusable_file_stops_start_up_naming_the_variable(
    env: pytest.MonkeyPatch, tmp_path: Path, problem: str
) -> None:
    path = tmp_path / "redis-password"
    if problem == "directory":
        path.mkdir()
    elif problem == "empty":
        path.write_text("\n")
    elif problem == "too_large":
        path.write_text("p" * (64 * 1024 + 1))
    elif problem == "binary":
        path.write_bytes(b"\xff\xfe\x00secret")
    env.setenv("REDIS_PASSWORD_FILE", str(path))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith("REDIS_PASSWORD_FILE: "), message
    assert str(path) in message
    expected = {
        "missing": "No such file",
        "directory": "Is a directory",
        "empty": "is empty",
        "too_large": "larger than 64 KiB",
        "binary": "not UTF-8",
    }[problem]
    assert expected in message
    assert "secret" not in message.replace(str(path), "")


def test_only_one_line_break_is_dropped_and_every_problem_is_named_at_once(
    tmp_path: Path,
) -> None:
    kept = tmp_path / "token"
    kept.write_bytes(b" token with edges \r\n")
    assert secrets_from_files({"HEALTHFORMS_METRICS_TOKEN_FILE": str(kept)}) == {
        "metrics_token": " token with edges "
    }
    with pytest.raises(ConfigError) as caught:
        secrets_from_files(
            {
                "redis_password_file": str(tmp_path / "absent"),  # case-insensitive, as the rest
                "HEALTHFORMS_SMTP_PASSWORD": "x",
                "HEALTHFORMS_SMTP_PASSWORD_FILE": str(kept),
            }
        )
    assert "REDIS_PASSWORD_FILE" in str(caught.value)
    assert "HEALTHFORMS_SMTP_PASSWORD and HEALTHFORMS_SMTP_PASSWORD_FILE" in str(caught.value)


def test_the_cli_reports_a_bad_secret_file_and_exits_2(tmp_path: Path) -> None:
    from tests.cli.test_config import run_cli

    result = run_cli(
        "check",
        env={
            "HEALTHFORMS_DATA_DIR": str(tmp_path / "data"),
            "HEALTHFORMS_ENCRYPTION_KEY_FILE": str(tmp_path / "nowhere"),
        },
    )
    assert result.returncode == 2
    assert "error: HEALTHFORMS_ENCRYPTION_KEY_FILE: cannot read" in result.stderr


@pytest.mark.multiprocess
def test_a_server_runs_on_secrets_from_files_only(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    """`serve` with the database, Redis, the master key and the metrics token all in
    files (mode 0400, as compose mounts them): it starts on those stores and /metrics
    wants the token from the file."""
    token = secrets.token_urlsafe(16)
    files = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "HEALTHFORMS_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
        "HEALTHFORMS_METRICS_TOKEN": token,
    }
    folder = tmp_path / "secrets"
    folder.mkdir()
    env: dict[str, str | None] = {
        **dict.fromkeys(CONFIG_VARS),
        **dict.fromkeys(SECRET_FILE_VARIABLES),
        "HEALTHFORMS_ENV": "development",
        "HEALTHFORMS_DATA_DIR": str(tmp_path / "data"),
        "HEALTHFORMS_LOG_LEVEL": "info",
    }
    for variable, value in files.items():
        path = folder / variable.lower()
        path.write_text(value + "\n")
        path.chmod(0o400)
        env[f"{variable}_FILE"] = str(path)
    server = start_server(env, tmp_path / "logs")
    try:
        health = httpx.get(f"{server.base_url}/health", timeout=5).json()
        refused = httpx.get(f"{server.base_url}/metrics", timeout=5)
        scraped = httpx.get(
            f"{server.base_url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=5
        )
    finally:
        server.stop()
    assert health["redis"]["status"] == "connected"
    assert health["database"]["status"] == "connected"
    expected_backend = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    assert health["database"]["backend"] == expected_backend
    assert refused.status_code == 401
    assert scraped.status_code == 200 and "healthforms_http_requests_total" in scraped.text
    assert token not in server.log_text()
