"""Encrypting a backup to an operator's key: X25519 + HKDF-SHA256 + chunked AES-256-GCM.

Model (the shape of age's X25519 recipient and STREAM construction, built on
`cryptography`): the operator keeps a private key offline (`healthforms keys
backup-keypair`); the servers that take backups hold only the public key. Each backup
makes an ephemeral X25519 key pair, derives a one-time AES-256 key from the shared
secret (salt: both public keys), and encrypts the archive in 64 KiB chunks. So a
server that is broken into cannot read the backups it took (or any other), and one
backup's key says nothing about another's.

Each chunk's nonce is its index (11 bytes, big-endian) and a last-chunk flag byte, and
every chunk authenticates the header as AAD: a chunk that is altered, dropped, moved,
or a stream cut short, or a header edited, fails to decrypt instead of restoring part
of a database. Decrypted bytes are written out only chunk by chunk after their tag
checked; the caller still treats the output as untrusted until the whole stream
ended with its last chunk (`open_stream` raises before returning otherwise).

File: MAGIC (6) | recipient key id (8) | ephemeral public key (32) | chunks.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = b"HFBK\x00\x01"
CHUNK = 64 * 1024
_TAG = 16
_KEY_ID = 8
_PUB = 32
HEADER_LEN = len(MAGIC) + _KEY_ID + _PUB
PUBLIC_PREFIX = "hfbackup-public-1:"
PRIVATE_PREFIX = "HFBACKUP-PRIVATE-1:"
_INFO = b"healthforms/backup/v1"


class BackupKeyError(ValueError):
    """The operator's backup key is missing, malformed or the wrong kind (says which)."""


class SealedStreamError(ValueError):
    """The archive does not open: not a backup, another key's, altered or cut short."""


@dataclass(frozen=True)
class BackupKey:
    """A public key (enough to take backups) and, on the operator's side, the private
    key (needed to restore)."""

    public: X25519PublicKey
    private: X25519PrivateKey | None = None

    def __repr__(self) -> str:  # never print key material
        return f"BackupKey(id={self.key_id}, private={self.private is not None})"

    @property
    def public_bytes(self) -> bytes:
        return self.public.public_bytes_raw()

    @property
    def key_id(self) -> str:
        """16 hex characters naming the key pair (a hash of the public key)."""
        return _key_id(self.public_bytes).hex()

    @property
    def public_text(self) -> str:
        return PUBLIC_PREFIX + base64.b64encode(self.public_bytes).decode("ascii")

    def private_text(self) -> str:
        if self.private is None:
            raise BackupKeyError("this is a public backup key: restoring needs the private key")
        raw = self.private.private_bytes_raw()
        return PRIVATE_PREFIX + base64.b64encode(raw).decode("ascii")


def _key_id(public: bytes) -> bytes:
    return hashlib.sha256(b"healthforms/backup-key-id/v1" + public).digest()[:_KEY_ID]


def generate_backup_key() -> BackupKey:
    private = X25519PrivateKey.generate()
    return BackupKey(public=private.public_key(), private=private)


def parse_backup_key(text: str, source: str) -> BackupKey:
    """Read a key as `keys backup-keypair` wrote it (either line); `source` names where
    it came from in the error (never the value)."""
    value = text.strip()
    for prefix, private in ((PUBLIC_PREFIX, False), (PRIVATE_PREFIX, True)):
        if value.startswith(prefix):
            try:
                raw = base64.b64decode(value[len(prefix) :], validate=True)
            except ValueError:
                raise BackupKeyError(f"{source}: not valid base64") from None
            if len(raw) != 32:
                raise BackupKeyError(f"{source}: a backup key is 32 bytes")
            if private:
                key = X25519PrivateKey.from_private_bytes(raw)
                return BackupKey(public=key.public_key(), private=key)
            return BackupKey(public=X25519PublicKey.from_public_bytes(raw))
    raise BackupKeyError(
        f"{source}: not a backup key (expected a line starting with {PUBLIC_PREFIX!r} "
        f"or {PRIVATE_PREFIX!r}; make one with `healthforms keys backup-keypair`)"
    )


def load_backup_key(path: Path | None, environ: dict[str, str] | None = None) -> BackupKey:
    """The key from `path`, else HEALTHFORMS_BACKUP_KEY, else the file named by
    HEALTHFORMS_BACKUP_KEY_FILE."""
    env = dict(os.environ) if environ is None else environ
    if path is not None:
        return parse_backup_key(_read_key_file(path, "--key-file"), f"--key-file {path}")
    if env.get("HEALTHFORMS_BACKUP_KEY"):
        return parse_backup_key(env["HEALTHFORMS_BACKUP_KEY"], "HEALTHFORMS_BACKUP_KEY")
    if env.get("HEALTHFORMS_BACKUP_KEY_FILE"):
        named = Path(env["HEALTHFORMS_BACKUP_KEY_FILE"])
        return parse_backup_key(
            _read_key_file(named, "HEALTHFORMS_BACKUP_KEY_FILE"),
            f"HEALTHFORMS_BACKUP_KEY_FILE {named}",
        )
    raise BackupKeyError(
        "no backup key: pass --key-file, or set HEALTHFORMS_BACKUP_KEY or "
        "HEALTHFORMS_BACKUP_KEY_FILE"
    )


def _read_key_file(path: Path, source: str) -> str:
    try:
        return path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not a text file"
        raise BackupKeyError(f"{source} {path}: cannot read ({reason})") from None


def _stream_key(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=ephemeral + recipient, info=_INFO
    ).derive(shared)


def _nonce(index: int, last: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def seal_stream(source: BinaryIO, target: BinaryIO, key: BackupKey) -> None:
    """Encrypt everything `source` holds to `key`'s public half."""
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = ephemeral.public_key().public_bytes_raw()
    recipient = key.public_bytes
    aead = AESGCM(_stream_key(ephemeral.exchange(key.public), ephemeral_public, recipient))
    header = MAGIC + _key_id(recipient) + ephemeral_public
    target.write(header)
    index = 0
    chunk = source.read(CHUNK)
    while True:
        following = source.read(CHUNK)
        last = not following
        target.write(aead.encrypt(_nonce(index, last), chunk, header))
        if last:
            return
        chunk, index = following, index + 1


def read_header(source: BinaryIO) -> tuple[bytes, str]:
    header = source.read(HEADER_LEN)
    if len(header) < HEADER_LEN or not header.startswith(MAGIC):
        raise SealedStreamError("not a healthforms backup (or not this format's version)")
    return header, header[len(MAGIC) : len(MAGIC) + _KEY_ID].hex()


def open_stream(source: BinaryIO, target: BinaryIO, key: BackupKey) -> None:
    """Decrypt a sealed stream into `target`; raise SealedStreamError (saying whether
    the key is another's or the archive was altered or cut) instead of finishing."""
    if key.private is None:
        raise BackupKeyError(
            "this is the public backup key: restoring needs the private key "
            "(the line starting with " + repr(PRIVATE_PREFIX) + ")"
        )
    header, recipient_id = read_header(source)
    if recipient_id != key.key_id:
        raise SealedStreamError(
            f"wrong key: this backup was encrypted to backup key {recipient_id}, "
            f"the key given is {key.key_id}"
        )
    ephemeral_public = header[len(MAGIC) + _KEY_ID :]
    try:
        shared = key.private.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
    except ValueError:
        raise SealedStreamError("the archive's header is damaged") from None
    aead = AESGCM(_stream_key(shared, ephemeral_public, key.public_bytes))
    index = 0
    sealed = source.read(CHUNK + _TAG)
    while True:
        following = source.read(CHUNK + _TAG)
        last = not following
        if len(sealed) < _TAG:
            raise SealedStreamError("the archive is cut short")
        try:
            target.write(aead.decrypt(_nonce(index, last), sealed, header))
        except InvalidTag:
            # Not the last chunk where one was expected (or the reverse), or altered.
            raise SealedStreamError(
                f"the archive was altered or cut short (chunk {index} fails its check)"
            ) from None
        if last:
            return
        sealed, index = following, index + 1
