"""The image's build steps, run for real: deploy/container/install.sh into a temporary
prefix (what the Containerfile's RUN does), then the service started from that prefix
the way the image starts it: as an unprivileged user (nobody, via setpriv), production
settings, secrets from files, the prefix and the working directory read-only, only its
data directory and TMPDIR writable, `--workers 2`, and the image's health check.

This machine has no container engine that can run a container (podman is installable
but cannot create one here, and no base image can be pulled), so this is how the
image's contents are exercised. Dependencies come from a local wheelhouse built once
per requirements.lock (cached), so the test needs no index. The installed prefix is
kept by the digest of the sources, the lock and install.sh: the script runs again
whenever any of them changes (the second leg of a run reuses the first one's).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from healthforms.redis.embedded import free_port
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.support import legs
from tests.support.servers import REPO_ROOT

pytestmark = [
    pytest.mark.multiprocess,
    pytest.mark.timeout(900),
    pytest.mark.skipif(os.geteuid() != 0, reason="switches to an unprivileged user (needs root)"),
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)"),
]

NOBODY = 65534
INSTALL_SH = REPO_ROOT / "deploy" / "container" / "install.sh"
# What the Containerfile COPYs into /src.
COPIED = ("pyproject.toml", "requirements.lock", "README.md", "healthforms", "deploy/container")


def _system_python() -> str | None:
    """An interpreter the unprivileged user can run too (the image has its own in
    /usr/local; here Debian's): one outside any private home directory."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        path = Path(candidate)
        if path.exists() and not str(path.resolve()).startswith("/root"):
            return candidate
    return None


def _wheelhouse(python: str) -> Path:
    """Wheels of every dependency (and the build backend) at the locked versions, for
    `python` (markers differ between interpreters), built once and cached."""
    version = subprocess.run(
        [python, "-c", "import sys; print(sys.version)"], capture_output=True, text=True
    ).stdout
    lock = (REPO_ROOT / "requirements.lock").read_bytes()
    pyproject = (REPO_ROOT / "pyproject.toml").read_bytes()
    digest = hashlib.sha256(lock + pyproject + version.encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "healthforms-tests"
    house = cache / f"wheelhouse-{digest}"
    if (house / ".complete").exists():
        return house
    cache.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix="wheelhouse-", dir=cache))
    try:
        subprocess.run([python, "-m", "venv", str(building / "venv")], check=True)
        subprocess.run(
            [str(building / "venv" / "bin" / "python"), "-m", "pip", "wheel", "--quiet",
             "--disable-pip-version-check", "--constraint", str(REPO_ROOT / "requirements.lock"),
             "--wheel-dir", str(building), str(_sources(building / "src")),
             "setuptools>=69", "wheel"],
            check=True, capture_output=True, timeout=600,
        )  # fmt: skip
        shutil.rmtree(building / "src")
        shutil.rmtree(building / "venv")
        for own in building.glob("healthforms-*.whl"):
            own.unlink()  # built from the sources each run, never cached
        (building / ".complete").touch()
        try:
            building.rename(house)
        except OSError:  # another run finished first
            shutil.rmtree(building, ignore_errors=True)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return house


def _sources(dest: Path) -> Path:
    """A copy of what the Containerfile copies (the repository's sources, no caches)."""
    dest.mkdir(parents=True)
    for name in COPIED:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(
                source, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        else:
            shutil.copy2(source, dest / name)
    return dest


# Installed prefixes are kept here by the digest of what went into them, so the second
# leg of a run (same sources) starts the service from the prefix the first one built.
# World-traversable: the unprivileged user runs from it.
PREFIX_CACHE = Path("/var/tmp/healthforms-tests")


def _source_digest(python: str) -> str:
    digest = hashlib.sha256(python.encode())
    for name in sorted(COPIED):
        root = REPO_ROOT / name
        paths = sorted(root.rglob("*")) if root.is_dir() else [root]
        for path in paths:
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                digest.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0")
                digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="module")
def installed() -> Path:
    """install.sh run as the image build runs it (root), into a fresh prefix; reused
    while the sources, the lock and install.sh stay the same."""
    python = _system_python()
    if python is None:
        pytest.skip("no interpreter outside /root that an unprivileged user can run")
    PREFIX_CACHE.mkdir(mode=0o755, parents=True, exist_ok=True)
    PREFIX_CACHE.chmod(0o755)
    base = PREFIX_CACHE / f"image-{_source_digest(python)}"
    prefix = base / "opt" / "healthforms"
    with (PREFIX_CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (base / ".complete").exists():
            return prefix
        for old in PREFIX_CACHE.glob("image-*"):
            # Older sources' prefixes, unless another checkout may be running one now.
            if time.time() - old.stat().st_mtime > 6 * 3600:
                shutil.rmtree(old, ignore_errors=True)
        base.mkdir(mode=0o755)
        try:
            house = _wheelhouse(python)
            source = _sources(base / "src")
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": str(base),
                "PIP_NO_INDEX": "1",
                "PIP_FIND_LINKS": str(house),
                "PIP_CONFIG_FILE": os.devnull,
                "PYTHON": python,
            }
            done = subprocess.run(
                [str(INSTALL_SH), str(source), str(prefix)],
                env=env, capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
            assert f"installed in {prefix}" in done.stdout
            shutil.rmtree(source)  # as the Containerfile does: nothing of /src stays
            (base / ".complete").touch()
        except BaseException:
            shutil.rmtree(base, ignore_errors=True)
            raise
    return prefix


def _as_nobody(*command: str) -> list[str]:
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--",
            *command]  # fmt: skip


def _snapshot(prefix: Path) -> dict[str, tuple[int, float]]:
    return {
        str(path): (path.stat().st_size, path.stat().st_mtime)
        for path in prefix.rglob("*")
        if not path.is_symlink()
    }


def test_the_image_steps_install_a_service_that_runs_read_only_as_nobody(
    installed: Path, tmp_path: Path, redis_url: str
) -> None:
    prefix = installed
    # Nothing under the prefix is writable by anyone but root.
    writable = [p for p in [prefix, *prefix.rglob("*")] if not p.is_symlink()
                and p.stat().st_mode & 0o022]  # fmt: skip
    assert not writable, writable[:5]
    assert os.access(prefix / "bin" / "healthforms-healthcheck", os.X_OK)

    run = Path(tempfile.mkdtemp(prefix="hf-run-", dir="/tmp"))
    try:
        _run_as_nobody(prefix, run, redis_url)
    finally:
        shutil.rmtree(run, ignore_errors=True)


def _run_as_nobody(prefix: Path, run: Path, redis_url: str) -> None:
    run.chmod(0o755)
    data, tmp, secrets = run / "data", run / "tmp", run / "secrets"
    for folder in (data, tmp):
        folder.mkdir(mode=0o700)
        os.chown(folder, NOBODY, NOBODY)
    database_url = legs.create_database(run / "db")
    if not legs.database_is_postgres():
        os.chown(run / "db", NOBODY, NOBODY)  # SQLite writes its journal beside the file
        for path in (run / "db").iterdir():
            os.chown(path, NOBODY, NOBODY)
    secrets.mkdir(mode=0o755)
    token = "metrics-" + hashlib.sha256(os.urandom(16)).hexdigest()[:16]
    files = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "HEALTHFORMS_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
        "HEALTHFORMS_METRICS_TOKEN": token,
    }
    port = free_port()
    env = {
        "PATH": f"{prefix}/bin:/usr/bin:/bin",
        "HOME": "/nonexistent",
        "TMPDIR": str(tmp),
        "PYTHONDONTWRITEBYTECODE": "1",
        "HEALTHFORMS_ENV": "production",
        "HEALTHFORMS_PUBLIC_URL": "https://forms.clinic.example",
        "HEALTHFORMS_DATA_DIR": str(data),
        "HEALTHFORMS_ALLOW_INSECURE_REDIS": "true",  # the leg's Redis: no TLS, no password
        "HEALTHFORMS_REDIS_PREFIX": f"hf-image-{port}:",
        "HEALTHFORMS_LOG_LEVEL": "info",
        "HEALTHFORMS_PORT": str(port),
    }
    for variable, value in files.items():
        path = secrets / variable.lower()
        path.write_text(value + "\n")
        path.chmod(0o444)
        env[f"{variable}_FILE"] = str(path)
    cli = str(prefix / "bin" / "healthforms")
    before = _snapshot(prefix)
    try:
        # Production refuses the embedded Valkey: no Redis configured, no start.
        refused = subprocess.run(
            _as_nobody(cli, "check"),
            env={k: v for k, v in env.items() if k != "REDIS_URL_FILE"},
            cwd=prefix, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "REDIS_URL (or REDIS_ADDR + REDIS_PASSWORD)" in refused.stderr

        migrated = subprocess.run(
            _as_nobody(cli, "migrate"), env=env, cwd=prefix,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr

        log_path = run / "serve.log"
        with log_path.open("wb") as log:
            server = subprocess.Popen(
                _as_nobody(cli, "serve", "--host", "127.0.0.1", "--port", str(port),
                           "--workers", "2"),
                env=env, cwd=prefix, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            healthy = _wait_healthy(prefix, env, server, log_path)
            assert healthy, log_path.read_text(errors="replace")[-3000:]
            base = f"http://127.0.0.1:{port}"
            health = httpx.get(f"{base}/health", timeout=5)
            assert health.status_code == 200 and health.json()["status"] == "healthy"
            assert health.json()["database"]["status"] == "connected"
            assert "strict-transport-security" in health.headers  # production headers
            scraped = httpx.get(
                f"{base}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=5
            )
            assert scraped.status_code == 200
            assert 'route="/health"' in scraped.text
            uids = _uids_of_tree(server.pid)
            assert uids and all(uid == NOBODY for uid in uids.values()), uids
        finally:
            server.terminate()
            server.wait(timeout=30)
        assert server.returncode == 0, log_path.read_text(errors="replace")[-3000:]
        # The health check fails once the service is gone.
        down = subprocess.run(
            _as_nobody(str(prefix / "bin" / "healthforms-healthcheck")),
            env=env, cwd=prefix, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert down.returncode == 1
        log_text = log_path.read_text(errors="replace")
        assert "Traceback" not in log_text, log_text[-3000:]
        assert token not in log_text and TEST_ENCRYPTION_KEY not in log_text
        # It wrote only where it may: nothing under the prefix changed.
        assert _snapshot(prefix) == before
        assert any(data.iterdir()), "the data directory stayed empty"
    finally:
        legs.drop_database(database_url)


def _wait_healthy(
    prefix: Path, env: dict[str, str], server: subprocess.Popen[bytes], log_path: Path
) -> bool:
    """The image's HEALTHCHECK command, as the unprivileged user, until it passes."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            return False
        check = subprocess.run(
            _as_nobody(str(prefix / "bin" / "healthforms-healthcheck")),
            env=env, cwd=prefix, capture_output=True, timeout=30,
        )  # fmt: skip
        if check.returncode == 0:
            return True
        time.sleep(0.5)
    return False


def _uids_of_tree(root: int) -> dict[int, int]:
    """pid -> real uid of `root` and every descendant (the uvicorn workers)."""
    parents: dict[int, int] = {}
    uids: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        parents[int(entry.name)] = int(fields["PPid"].strip())
        uids[int(entry.name)] = int(fields["Uid"].split()[0])
    tree = {root}
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return {pid: uids[pid] for pid in tree if pid in uids}
