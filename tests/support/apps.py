"""Apps of a test's own (custom settings, private servers) and clients for them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from healthforms.app import create_app
from healthforms.config import Settings

TEST_PEER = ("203.0.113.10", 40000)


@asynccontextmanager
async def running_app(settings: Settings, app: FastAPI | None = None) -> AsyncIterator[FastAPI]:
    """create_app(settings) (or a prepared app) inside its lifespan."""
    application = app or create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@asynccontextmanager
async def asgi_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=TEST_PEER)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http
