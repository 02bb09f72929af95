"""pg_dump and pg_restore get the service's connection as libpq variables; the password
only in a private PGPASSFILE (never argv, which `ps` shows to every local user)."""

from __future__ import annotations

import stat
from pathlib import Path

from healthforms.backup.database import libpq_env


def test_the_url_becomes_libpq_variables_and_the_password_a_private_passfile(
    tmp_path: Path,
) -> None:
    url = (
        "postgresql+asyncpg://hf_owner:p%3Aw%5Cd%40x@db.internal:6432/healthforms"
        "?ssl=verify-full&sslrootcert=/etc/ssl/db-ca.pem"
    )
    env = libpq_env(url, tmp_path)
    assert env["PGHOST"] == "db.internal" and env["PGPORT"] == "6432"
    assert env["PGUSER"] == "hf_owner" and env["PGDATABASE"] == "healthforms"
    assert env["PGSSLMODE"] == "verify-full"
    assert env["PGSSLROOTCERT"] == "/etc/ssl/db-ca.pem"
    assert "p:w" not in "".join(env.values())  # the password is in no variable
    passfile = Path(env["PGPASSFILE"])
    assert stat.S_IMODE(passfile.stat().st_mode) == 0o600  # libpq ignores a readable one
    # libpq's format: host:port:db:user:password with ':' and '\' escaped.
    assert passfile.read_text() == "*:*:*:*:p\\:w\\\\d@x\n"


def test_a_unix_socket_and_ssl_true_are_translated(tmp_path: Path) -> None:
    env = libpq_env(
        "postgresql+asyncpg://postgres@/healthforms?host=/var/run/postgresql&ssl=true", tmp_path
    )
    assert env["PGHOST"] == "/var/run/postgresql"
    assert env["PGSSLMODE"] == "require"
    assert Path(env["PGPASSFILE"]).read_text() == ""
