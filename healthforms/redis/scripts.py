"""Lua scripts kept as .lua files beside their callers, run by EVALSHA with NOSCRIPT reload."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from healthforms.redis.multiplex import Multiplexer

KeyT = str | bytes
ArgT = str | bytes | int | float


# What runs a script: redis-py's client, or the shared pipelined connection.
ScriptClient = Redis | Multiplexer


class LuaScript:
    """One script built from .lua files (a shared library file may come first).

    The SHA is computed locally, so the first call is a plain EVALSHA; after a Redis
    restart or SCRIPT FLUSH the server answers NOSCRIPT and the script is loaded again
    and the call repeated. The repeat is safe: NOSCRIPT means the script never ran.
    """

    def __init__(self, *paths: Path, name: str | None = None) -> None:
        if not paths:
            raise ValueError("a LuaScript needs at least one file")
        self.source = "\n".join(path.read_text(encoding="utf-8") for path in paths)
        self.sha = hashlib.sha1(self.source.encode("utf-8"), usedforsecurity=False).hexdigest()
        self.name = name or paths[-1].stem

    @classmethod
    def beside(cls, module_file: str, *names: str) -> LuaScript:
        """Load `names` (e.g. "gcra.lua", "ratelimit.lua") from the caller's folder."""
        folder = Path(module_file).parent
        return cls(*(folder / name for name in names))

    async def __call__(
        self, redis: ScriptClient, keys: Sequence[KeyT] = (), args: Sequence[ArgT] = ()
    ) -> Any:
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await redis.script_load(self.source)
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
