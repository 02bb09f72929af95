"""The "typical CRUD" reference: FastAPI + SQLAlchemy 2's async ORM, as tutorials write it.

No session, no rate limit, no encryption, no audit: read one JSON row by id, insert one
posted JSON row. The database settings are the ones such an app ships with (SQLite in
WAL mode with a busy timeout; PostgreSQL through asyncpg with SQLAlchemy's default
pool), so bench/database.py can put our paths beside it on the same database.

    uvicorn --factory bench.peers.crud_app:create_app   (BENCH_DATABASE_URL)

GET /items/{id} → the row's JSON or 404; POST /items (a JSON object) → 201 {"id"}.
"""

# No `from __future__ import annotations`: FastAPI resolves the local SessionDep at runtime.
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, HTTPException
from sqlalchemy import JSON, String, event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "bench_items"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


def _wal(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def create_app() -> FastAPI:
    url = os.environ.get("BENCH_DATABASE_URL", "sqlite+aiosqlite:///bench-crud.db")
    engine = create_async_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _wal)
    sessions = async_sessionmaker(engine, expire_on_commit=False)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        yield
        await engine.dispose()

    async def get_session() -> AsyncIterator[AsyncSession]:
        async with sessions() as session:
            yield session

    SessionDep = Annotated[AsyncSession, Depends(get_session)]
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)

    @app.get("/items/{item_id}")
    async def read_item(item_id: str, session: SessionDep) -> dict[str, Any]:
        item = await session.get(Item, item_id)
        if item is None:
            raise HTTPException(status_code=404)
        return {"id": item.id, "data": item.data}

    @app.post("/items", status_code=201)
    async def create_item(
        session: SessionDep,
        data: dict[str, Any] = Body(...),  # noqa: B008
    ) -> dict[str, str]:
        item = Item(id=uuid.uuid4().hex, data=data)
        session.add(item)
        await session.commit()
        return {"id": item.id}

    return app
