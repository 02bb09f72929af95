"""deploy/compose.yaml and the Containerfile hold together: no container engine can run
them here, so their syntax and the references between them and the service are checked.

The compose file is loaded with PyYAML and every key it uses is checked against the
subset of the Compose specification it is allowed to use (a typo is a failure, not an
ignored key); then the wiring: secrets, networks, volumes, dependencies, the `*_FILE`
variables (each one a secret setting the service knows, each file a secret the service
mounts), the proxy's address inside HEALTHFORMS_TRUSTED_PROXIES, the HAProxy config's
variables, and the Containerfile's use of install.sh and its health check.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import yaml

from healthforms.config import SECRET_FILE_VARIABLES, Settings
from tests.support.servers import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
CONTAINERFILE = DEPLOY / "container" / "Containerfile"
HAPROXY_CFG = DEPLOY / "haproxy" / "haproxy.cfg"

# The Compose specification's keys this file may use (compose-spec.io, schema 3.x/v2).
TOP_LEVEL = {"name", "services", "networks", "volumes", "secrets"}
SERVICE_KEYS = {
    "build", "image", "command", "restart", "read_only", "tmpfs", "cap_drop",
    "security_opt", "stop_grace_period", "environment", "secrets", "healthcheck",
    "networks", "depends_on", "volumes", "ports", "hostname",
}  # fmt: skip
BUILD_KEYS = {"context", "dockerfile"}
HEALTHCHECK_KEYS = {"test", "interval", "timeout", "start_period", "retries"}
DEPENDS_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
NETWORK_KEYS = {"driver", "internal", "ipam"}
RESTART = {"no", "always", "on-failure", "unless-stopped"}
DURATION = re.compile(r"^(\d+(\.\d+)?(us|ms|s|m|h))+$")


def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_the_compose_file_uses_only_known_keys_with_valid_values() -> None:
    compose = _compose()
    # x-*: extension fields (the instances' shared block), allowed by the spec.
    unknown_top = {key for key in compose if not key.startswith("x-")} - TOP_LEVEL
    assert not unknown_top, unknown_top
    services: dict[str, dict[str, Any]] = compose["services"]
    for name, service in services.items():
        unknown = set(service) - SERVICE_KEYS
        assert not unknown, (name, unknown)
        assert "image" in service or "build" in service, name
        if "build" in service:
            assert set(service["build"]) <= BUILD_KEYS, name
            context = (COMPOSE.parent / service["build"]["context"]).resolve()
            assert (context / service["build"]["dockerfile"]).is_file(), name
        assert str(service.get("restart", "no")) in RESTART, name
        if "healthcheck" in service:
            check = service["healthcheck"]
            assert set(check) <= HEALTHCHECK_KEYS, name
            assert check["test"][0] in ("CMD", "CMD-SHELL"), name
            for key in ("interval", "timeout", "start_period"):
                if key in check:
                    assert DURATION.match(check[key]), (name, key)
        if "stop_grace_period" in service:
            assert DURATION.match(service["stop_grace_period"]), name
        for port in service.get("ports", []):
            assert re.fullmatch(r"\d+:\d+", port), (name, port)
        for mount in service.get("tmpfs", []):
            assert mount.startswith("/"), (name, mount)
        environment = service.get("environment", {})
        assert isinstance(environment, dict), name
        assert all(isinstance(v, str) for v in environment.values()), (name, environment)
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in services, (name, dependency)
            assert spec["condition"] in DEPENDS_CONDITIONS, (name, dependency)
    for network in compose["networks"].values():
        assert set(network) <= NETWORK_KEYS


def test_every_reference_in_the_compose_file_is_defined() -> None:
    compose = _compose()
    secrets, networks = compose["secrets"], compose["networks"]
    volumes = compose["volumes"]
    for name, service in compose["services"].items():
        for secret in service.get("secrets", []):
            assert secret in secrets, (name, secret)
        nets = service.get("networks", [])
        for network in nets if isinstance(nets, list) else list(nets):
            assert network in networks, (name, network)
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), (name, source)
            else:
                assert source in volumes, (name, source)
    for secret in secrets.values():
        assert secret["file"].startswith("./secrets/")  # outside git (deploy/.gitignore)
    assert "secrets/" in (DEPLOY / ".gitignore").read_text()


def test_the_instances_get_every_secret_from_a_file_they_mount() -> None:
    compose = _compose()
    settings_env = {
        alias.upper()
        for field in Settings.model_fields.values()
        for alias in getattr(field.validation_alias, "choices", [])
        if isinstance(alias, str)
    }
    for name in ("app1", "app2", "migrate"):
        service = compose["services"][name]
        environment: dict[str, str] = service["environment"]
        mounted = {f"/run/secrets/{secret}" for secret in service["secrets"]}
        for variable, value in environment.items():
            if variable.endswith("_FILE"):
                assert variable.removesuffix("_FILE") in SECRET_FILE_VARIABLES, variable
                assert value in mounted, (name, variable, value)
            else:
                assert variable in settings_env, (name, variable)  # a setting that exists
                assert variable not in SECRET_FILE_VARIABLES, (name, variable)  # never inline
        assert environment["HEALTHFORMS_ENV"] == "production"
        assert "HEALTHFORMS_ENCRYPTION_KEY_FILE" in environment
        assert "DATABASE_URL_FILE" in environment


def test_the_proxy_is_the_one_address_the_instances_trust() -> None:
    compose = _compose()
    proxy = compose["services"]["proxy"]
    address = ipaddress.ip_address(proxy["networks"]["backend"]["ipv4_address"])
    subnet = ipaddress.ip_network(compose["networks"]["backend"]["ipam"]["config"][0]["subnet"])
    assert address in subnet
    for name in ("app1", "app2"):
        trusted = compose["services"][name]["environment"]["HEALTHFORMS_TRUSTED_PROXIES"]
        networks = [ipaddress.ip_network(cidr.strip()) for cidr in trusted.split(",")]
        assert any(address in network for network in networks), (name, trusted)
        assert networks == [ipaddress.ip_network(f"{address}/32")], "trust the proxy only"
    # The proxy runs the repository's HAProxy config, with its variables set.
    assert "./haproxy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in proxy["volumes"]
    used = set(re.findall(r"\$\{(HF_[A-Z0-9_]+)", HAPROXY_CFG.read_text()))
    assert used - {"HF_APP3"} <= set(proxy["environment"]), used - set(proxy["environment"])
    for index, name in ((1, "app1"), (2, "app2")):
        assert proxy["environment"][f"HF_APP{index}"] == f"{name}:8000"
    assert compose["networks"]["backend"]["internal"] is True


def test_the_containerfile_runs_install_sh_as_a_user_with_a_health_check() -> None:
    text = CONTAINERFILE.read_text()
    assert "RUN /src/deploy/container/install.sh /src /opt/healthforms" in text
    assert re.search(r"^USER 10001:10001$", text, re.M)
    assert "HEALTHCHECK" in text and "/opt/healthforms/bin/healthforms-healthcheck" in text
    assert "healthforms-healthcheck" in (DEPLOY / "container" / "install.sh").read_text()
    assert "HEALTHFORMS_ENV=production" in text
    cmd = re.search(r"^CMD \[(.*)\]$", text, re.M)
    assert cmd is not None and '"--port", "8000"' in cmd.group(1)
    # Every path the Containerfile copies exists.
    for line in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for source in line.split():
            assert (REPO_ROOT / source).exists(), source
