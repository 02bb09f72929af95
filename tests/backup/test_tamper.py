"""A backup that is another key's, altered, cut short or forged is refused before the
target database is touched (it stays empty)."""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from healthforms.backup.sealing import (
    HEADER_LEN,
    SealedStreamError,
    generate_backup_key,
    load_backup_key,
    open_stream,
    parse_backup_key,
    seal_stream,
)
from tests.backup.conftest import KeyPair, cli_env, database_is_empty, make_keypair
from tests.cli.test_config import run_cli


def _restore(archive: Path, key: Path, target: str, tmp_path: Path) -> tuple[int, str]:
    result = run_cli(
        "restore",
        "--in",
        str(archive),
        "--key-file",
        str(key),
        "--database-url",
        target,
        env=cli_env(target, tmp_path / "data"),
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stdout + result.stderr


async def test_another_backup_key_is_named_as_the_wrong_key(
    shared_backup: Path, tmp_path: Path, empty_target_url: str
) -> None:
    other = make_keypair(tmp_path / "other")
    code, said = _restore(shared_backup, other.private, empty_target_url, tmp_path)
    assert code == 1 and "wrong key" in said
    assert await asyncio.to_thread(database_is_empty, empty_target_url)


def _flip_middle(data: bytes) -> bytes:
    middle = HEADER_LEN + (len(data) - HEADER_LEN) // 2
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]


def _cut_last_byte(data: bytes) -> bytes:
    return data[:-1]


def _drop_to_header(data: bytes) -> bytes:
    return data[: HEADER_LEN + 10]


@pytest.mark.parametrize(
    "damage", [_flip_middle, _cut_last_byte, _drop_to_header], ids=["flipped", "cut", "header"]
)
async def test_an_altered_or_cut_archive_is_refused(
    shared_backup: Path,
    backup_keys_shared: KeyPair,
    tmp_path: Path,
    empty_target_url: str,
    damage: Callable[[bytes], bytes],
) -> None:
    damaged = tmp_path / "damaged.hfbk"
    damaged.write_bytes(damage(shared_backup.read_bytes()))
    code, said = _restore(damaged, backup_keys_shared.private, empty_target_url, tmp_path)
    assert code == 1, said
    assert "altered or cut short" in said or "cut short" in said
    assert await asyncio.to_thread(database_is_empty, empty_target_url)


def _repack(archive: Path, keys: KeyPair, change: Callable[[dict[str, bytes]], None]) -> bytes:
    """What a holder of the public backup key (every server) could do: decrypt nothing,
    but seal an archive of their own making. Here: the real parts, changed."""
    plain = io.BytesIO()
    with archive.open("rb") as source:
        open_stream(source, plain, load_backup_key(keys.private))
    plain.seek(0)
    parts: dict[str, bytes] = {}
    with tarfile.open(fileobj=plain, mode="r:gz") as tar:
        for member in tar:
            extracted = tar.extractfile(member)
            assert extracted is not None
            parts[member.name] = extracted.read()
    change(parts)
    packed = io.BytesIO()
    with tarfile.open(fileobj=packed, mode="w:gz") as tar:
        for name, content in parts.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    packed.seek(0)
    sealed = io.BytesIO()
    seal_stream(packed, sealed, load_backup_key(keys.public))
    return sealed.getvalue()


def _edit_database(parts: dict[str, bytes]) -> None:
    name = next(n for n in parts if n.startswith("database."))
    middle = len(parts[name]) // 2
    parts[name] = (
        parts[name][:middle] + bytes([parts[name][middle] ^ 0xFF]) + parts[name][middle + 1 :]
    )


def _edit_manifest_counts(parts: dict[str, bytes]) -> None:
    manifest = json.loads(parts["manifest.json"])
    manifest["counts"]["responses"] = manifest["counts"].get("responses", 0) + 1
    parts["manifest.json"] = json.dumps(manifest).encode()


def _add_entry(parts: dict[str, bytes]) -> None:
    parts["../escape.txt"] = b"x"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (_edit_database, "does not match its hash"),
        (_edit_manifest_counts, "signature is invalid"),
        (_add_entry, "unexpected entry"),
    ],
    ids=["part", "manifest", "path"],
)
async def test_a_forged_archive_is_refused(
    shared_backup: Path,
    backup_keys_shared: KeyPair,
    tmp_path: Path,
    empty_target_url: str,
    change: Callable[[dict[str, bytes]], None],
    reason: str,
) -> None:
    forged = tmp_path / "forged.hfbk"
    forged.write_bytes(_repack(shared_backup, backup_keys_shared, change))
    code, said = _restore(forged, backup_keys_shared.private, empty_target_url, tmp_path)
    assert code == 1 and reason in said, said
    assert await asyncio.to_thread(database_is_empty, empty_target_url)
    assert not (tmp_path.parent / "escape.txt").exists()


def test_chunk_boundaries_round_trip_and_reordering_fails() -> None:
    key = generate_backup_key()
    for size in (0, 1, 64 * 1024 - 1, 64 * 1024, 64 * 1024 + 1, 3 * 64 * 1024):
        data = bytes(range(256)) * (size // 256) + bytes(size % 256)
        sealed = io.BytesIO()
        seal_stream(io.BytesIO(data), sealed, key)
        opened = io.BytesIO()
        open_stream(io.BytesIO(sealed.getvalue()), opened, key)
        assert opened.getvalue() == data
    # Two full chunks swapped: each is authentic alone, but not at that position.
    data = b"a" * (64 * 1024) + b"b" * (64 * 1024) + b"c"
    sealed = io.BytesIO()
    seal_stream(io.BytesIO(data), sealed, key)
    raw = sealed.getvalue()
    chunk = 64 * 1024 + 16
    first, second = HEADER_LEN, HEADER_LEN + chunk
    swapped = raw[:first] + raw[second : second + chunk] + raw[first:second] + raw[second + chunk :]
    with pytest.raises(SealedStreamError, match="chunk 0"):
        open_stream(io.BytesIO(swapped), io.BytesIO(), key)


def test_key_files_say_what_is_wrong_without_echoing_them(tmp_path: Path) -> None:
    secret_looking = "not-a-key-but-maybe-a-password"
    with pytest.raises(ValueError, match="not a backup key") as caught:
        parse_backup_key(secret_looking, "HEALTHFORMS_BACKUP_KEY")
    assert secret_looking not in str(caught.value)
    with pytest.raises(ValueError, match="no backup key"):
        load_backup_key(None, environ={})
    key = generate_backup_key()
    assert parse_backup_key(key.public_text, "x").key_id == key.key_id
    assert parse_backup_key(key.private_text(), "x").private is not None
    assert key.private_text() not in repr(key)
