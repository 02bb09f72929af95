#!/bin/sh
# The build steps of the healthforms image, in one place:
#   deploy/container/Containerfile runs this at build time, and
#   tests/scale/test_container.py runs this same script into a temporary prefix and
#   starts the service from the result as a non-root user with nothing writable but
#   its data directory and TMPDIR.
#
# usage: install.sh SOURCE_DIR PREFIX
#   SOURCE_DIR  a copy of the repository (pyproject.toml, requirements.lock, healthforms/)
#   PREFIX      where the service goes (the image: /opt/healthforms); must not exist
#
# The result: PREFIX/bin/healthforms (the CLI), PREFIX/bin/healthforms-healthcheck
# (exit 0 when GET /health answers 200), every module byte-compiled (the running
# service writes nothing under PREFIX), everything read-only for everyone but root.
# pip's own settings (PIP_INDEX_URL, PIP_FIND_LINKS, PIP_NO_INDEX...) pass through.
set -eu

usage() { echo "usage: $0 SOURCE_DIR PREFIX" >&2; exit 2; }
[ $# -eq 2 ] || usage
SRC=$1
PREFIX=$2
PYTHON=${PYTHON:-python3}

[ -f "$SRC/pyproject.toml" ] && [ -f "$SRC/requirements.lock" ] || {
  echo "install.sh: $SRC is not a healthforms source tree" >&2; exit 2; }
[ ! -e "$PREFIX" ] || { echo "install.sh: $PREFIX exists already" >&2; exit 2; }

# 1. A virtual environment of its own: the service's dependencies at the exact
#    versions CI tested (requirements.lock), never the system's packages.
"$PYTHON" -m venv "$PREFIX"
"$PREFIX/bin/python" -m pip install --quiet --no-cache-dir --disable-pip-version-check \
  --constraint "$SRC/requirements.lock" "$SRC"

# 2. The container health check (HEALTHCHECK; compose's healthcheck): no curl in a
#    slim image, so Python's urllib. Exit 0 only for 200 ("healthy" or "degraded":
#    the service works without Redis); 503 (no database) and no answer are 1.
cat > "$PREFIX/bin/healthforms-healthcheck" <<PYEOF
#!$PREFIX/bin/python
"""Exit 0 when http://127.0.0.1:\${HEALTHFORMS_PORT:-8000}/health answers 200."""
import os
import sys
import urllib.error
import urllib.request

url = f"http://127.0.0.1:{os.environ.get('HEALTHFORMS_PORT', '8000')}/health"
try:
    with urllib.request.urlopen(url, timeout=float(os.environ.get("HEALTHCHECK_TIMEOUT", "3"))) as reply:
        sys.exit(0 if reply.status == 200 else 1)
except (urllib.error.URLError, OSError) as exc:
    print(f"healthcheck: {url}: {exc}", file=sys.stderr)
    sys.exit(1)
PYEOF
chmod 0755 "$PREFIX/bin/healthforms-healthcheck"

# 3. Byte-compile everything now: at run time the prefix is read-only (the image's
#    root filesystem is mounted read-only), so Python must find the .pyc files made.
"$PREFIX/bin/python" -m compileall -q -j 0 "$PREFIX/lib" > /dev/null

# 4. Nothing under the prefix is writable but by root; the service runs as another user.
chmod -R go-w "$PREFIX"

# 5. It runs: the CLI loads every module it serves with.
"$PREFIX/bin/healthforms" --help > /dev/null
"$PREFIX/bin/python" -c "import healthforms.app"
echo "install.sh: healthforms installed in $PREFIX"
