#!/usr/bin/env bash
# Run every benchmark (or the ones named): python -m bench [module ...]
# Needs wrk (apt-get install wrk) for the HTTP rows and the bench extras
# (pip install -e ".[bench]"). Results: bench/results/latest.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
if ! command -v wrk >/dev/null; then
  echo "bench: wrk not found; install it with: apt-get install -y wrk" >&2
  exit 2
fi
exec "$PY" -m bench "$@"
