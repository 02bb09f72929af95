"""Where the sealed bytes of uploads live, behind one small protocol.

`DatabaseFileStore` keeps them in `upload_blobs`, in the caller's transaction: a file
is stored, attached and deleted exactly when its rows are, it is in every database
backup with the response that names it, and there is no second place to secure or to
restore in step (docs/uploads.md says why, and what an object store would change).
An S3-compatible store would implement the same three calls; its `delete` would run
after the caller's commit (an object store takes no part in the transaction).

Stores see ciphertext only: sealing (crypto/envelope.py, AAD = the upload id) happens
in service.py, before `put`, so no store ever holds a file in clear.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from healthforms.crypto.envelope import Sealed
from healthforms.uploads.models import UploadBlob


class FileStore(Protocol):
    async def put(self, session: AsyncSession, upload_id: str, sealed: Sealed) -> None:
        """Keep the sealed bytes of an upload (inside the caller's transaction)."""
        ...

    async def get(self, session: AsyncSession, upload_id: str) -> Sealed | None:
        """The sealed bytes of an upload, or None when they are gone."""
        ...

    async def delete(self, session: AsyncSession, upload_ids: Sequence[str]) -> None:
        """Forget the bytes of these uploads (inside the caller's transaction)."""
        ...


class DatabaseFileStore:
    """Sealed bytes in the `upload_blobs` table, one row per upload."""

    async def put(self, session: AsyncSession, upload_id: str, sealed: Sealed) -> None:
        session.add(
            UploadBlob(
                upload_id=upload_id,
                ciphertext=sealed.ciphertext,
                wrapped_key=sealed.wrapped_key,
                key_id=sealed.key_id,
            )
        )

    async def get(self, session: AsyncSession, upload_id: str) -> Sealed | None:
        row = (
            await session.execute(
                select(UploadBlob.ciphertext, UploadBlob.wrapped_key, UploadBlob.key_id).where(
                    UploadBlob.upload_id == upload_id
                )
            )
        ).first()
        if row is None:
            return None
        return Sealed(ciphertext=row[0], wrapped_key=row[1], key_id=row[2])

    async def delete(self, session: AsyncSession, upload_ids: Sequence[str]) -> None:
        if upload_ids:
            await session.execute(
                delete(UploadBlob)
                .where(UploadBlob.upload_id.in_(list(upload_ids)))
                .execution_options(synchronize_session=False)
            )


FILE_STORE: FileStore = DatabaseFileStore()
