"""Debian's HAProxy in front of real server processes, on deploy/haproxy/haproxy.cfg as is.

The repository's config takes everything that differs (ports, certificate, runtime
socket, the instances) from the environment; this starts `haproxy` on it with a
self-signed certificate made here, talks to its runtime API (drain, ready, state)
and reads its log (which requests it retried).
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from healthforms.redis.embedded import free_port
from tests.support.servers import REPO_ROOT

HAPROXY_CFG = REPO_ROOT / "deploy" / "haproxy" / "haproxy.cfg"
BACKEND = "app"


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
    )


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """(PEM with certificate + key for HAProxy, PEM with the certificate for clients)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    bundle = folder / "site.pem"
    bundle.write_bytes(cert_pem + key_pem)
    bundle.chmod(0o600)
    ca = folder / "ca.pem"
    ca.write_bytes(cert_pem)
    return bundle, ca


@dataclass
class Balancer:
    process: subprocess.Popen[bytes]
    port: int
    http_port: int
    socket_path: Path
    ca_file: Path
    log_path: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    # Runtime API ---------------------------------------------------------------------------

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.socket_path))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def servers(self) -> dict[str, dict[str, str]]:
        """`show stat` of the backend's servers: name -> {column: value}."""
        lines = self.command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows: dict[str, dict[str, str]] = {}
        for line in lines[1:]:
            if not line.strip():
                continue
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == BACKEND and row.get("svname") not in ("BACKEND", "FRONTEND"):
                rows[row["svname"]] = row
        return rows

    def status(self, server: str) -> str:
        return self.servers()[server]["status"]

    def wait_status(self, server: str, wanted: Sequence[str], timeout_s: float = 20.0) -> float:
        """Seconds until `server`'s status is one of `wanted`; AssertionError after timeout."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.status(server) in wanted:
                return time.monotonic() - started
            time.sleep(0.05)
        raise AssertionError(f"{server} not {wanted} after {timeout_s}s: {self.status(server)}")

    def drain(self, server: str, timeout_s: float = 30.0) -> float:
        """No new requests to `server`; return once none is in flight there (seconds)."""
        self.command(f"set server {BACKEND}/{server} state drain")
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.servers()[server]["scur"] == "0":
                return time.monotonic() - started
            time.sleep(0.05)
        raise AssertionError(f"{server} still busy after {timeout_s}s")

    def ready(self, server: str) -> None:
        self.command(f"set server {BACKEND}/{server} state ready")

    # Log -----------------------------------------------------------------------------------

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def retried(self) -> list[str]:
        """Request log lines HAProxy retried (the httplog retries field, `+` = redispatched)."""
        return [line for line in self.log_text().splitlines() if _retries(line) > 0]

    def errors(self) -> list[str]:
        """Request log lines with a 5xx status or a termination state other than normal
        (the two-letter state after the cookie fields: `--` is a normal end)."""
        kept = []
        for line in self.log_text().splitlines():
            match = _STATUS.search(line)
            if match and (match.group(1).startswith("5") or match.group(2)[:2] != "--"):
                kept.append(line)
        return kept

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


# httplog: ... actconn/feconn/beconn/srv_conn/retries srv_queue/backend_queue "request"
_COUNTERS = re.compile(r" \d+/\d+/\d+/\d+/\+?(\d+) \d+/\d+ \"")


# httplog: ... Tq/Tw/Tc/Tr/Ta status bytes req_cookie res_cookie termination_state ...
_STATUS = re.compile(r" -?\d+/-?\d+/-?\d+/-?\d+/\+?\d+ (\d{3}|-1) \d+ \S+ \S+ (\S{4}) ")


def _retries(line: str) -> int:
    match = _COUNTERS.search(line)
    return int(match.group(1)) if match else 0


@contextmanager
def running_balancer(folder: Path, instances: Sequence[str]) -> Iterator[Balancer]:
    """HAProxy on deploy/haproxy/haproxy.cfg in front of `instances` (host:port, 2 or 3),
    ready once every instance is UP."""
    binary = haproxy_binary()
    if binary is None:
        raise RuntimeError("haproxy is not installed (Debian package `haproxy`)")
    if not 2 <= len(instances) <= 3:
        raise ValueError("the config has two instances, and a third when HF_APP3 is set")
    folder.mkdir(parents=True, exist_ok=True)
    bundle, ca = self_signed_certificate(folder / "tls")
    port, http_port = free_port(), free_port()
    socket_path = folder / "admin.sock"
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HF_HTTPS_BIND": f"127.0.0.1:{port}",
        "HF_HTTP_BIND": f"127.0.0.1:{http_port}",
        "HF_TLS_CERT": str(bundle),
        "HF_ADMIN_SOCKET": str(socket_path),
    }
    for index, address in enumerate(instances, start=1):
        env[f"HF_APP{index}"] = address
    check = subprocess.run(
        [binary, "-c", "-f", str(HAPROXY_CFG)], env=env, capture_output=True, text=True
    )
    if check.returncode != 0:
        raise RuntimeError(f"haproxy -c refused the config:\n{check.stdout}{check.stderr}")
    log_path = folder / "haproxy.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [binary, "-db", "-f", str(HAPROXY_CFG)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    balancer = Balancer(process, port, http_port, socket_path, ca, log_path)
    try:
        deadline = time.monotonic() + 20
        while not socket_path.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"haproxy did not start:\n{balancer.log_text()[-2000:]}")
            time.sleep(0.05)
        for index in range(1, len(instances) + 1):
            balancer.wait_status(f"app{index}", ("UP",))
        yield balancer
    finally:
        balancer.stop()
