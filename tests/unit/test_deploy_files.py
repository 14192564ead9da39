"""The reference deployment in docs/deploy/ holds together (no container registry is
reachable here, so it is read, not run; tests/integration/test_two_instances.py serves its
nginx config in front of two gatekeepers and runs `nginx -t` on it).
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from app.settings import Settings

REPO = Path(__file__).parents[2]
DEPLOY = REPO / "docs" / "deploy"
TESTED_NGINX = REPO / "docs" / "proxies" / "nginx.conf"


def load_derivation():
    spec = importlib.util.spec_from_file_location(
        "derive_nginx_conf", DEPLOY / "derive_nginx_conf.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def env_example() -> dict[str, str]:
    found = {}
    for line in (DEPLOY / "env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, equals, value = line.partition("=")
            assert equals, f"env.example: not NAME=value: {line!r}"
            found[name.strip()] = value.strip()
    return found


def option(command: list[str], name: str) -> str | None:
    """The value after ``name`` in a command given as a list."""
    return command[command.index(name) + 1] if name in command else None


def blocks(text: str, keyword: str) -> dict[str, str]:
    """Each ``keyword ... { ... }`` block of an nginx config: its opening line -> its body."""
    found = {}
    for match in re.finditer(rf"^\s*({keyword}\b[^{{]*)\{{", text, re.M):
        depth, end = 1, match.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            end += 1
        found[" ".join(match[1].split())] = text[match.end() : end - 1]
    return found


def upstream_servers(text: str) -> dict[str, list[str]]:
    return {
        header.split()[1]: re.findall(r"^\s*server\s+(\S+);", body, re.M)
        for header, body in blocks(text, "upstream").items()
    }


class TestComposeFile:
    def test_it_has_the_gatekeeper_redis_nginx_and_a_file_server(self, services):
        assert set(services) == {"gatekeeper", "redis", "nginx", "datasets"}

    def test_the_gatekeeper_is_built_from_the_repositorys_dockerfile(self, services):
        build = services["gatekeeper"]["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == REPO / "Dockerfile"

    def test_more_than_one_gatekeeper_serves(self, services):
        assert services["gatekeeper"]["deploy"]["replicas"] >= 2

    def test_redis_keeps_an_aof_on_a_volume_and_never_evicts(self, compose, services):
        redis = services["redis"]
        command = redis["command"]
        assert command[0] == "redis-server"
        assert option(command, "--appendonly") == "yes"
        assert option(command, "--maxmemory-policy") == "noeviction"
        volume, _, target = redis["volumes"][0].partition(":")
        assert target == "/data" and volume in compose["volumes"]  # a named volume

    def test_the_gatekeepers_use_the_redis_service_with_its_password(self, services):
        url = services["gatekeeper"]["environment"]["REDIS_URL"]
        password = option(services["redis"]["command"], "--requirepass")
        assert url.startswith(f"redis://:{password}@redis:6379/")
        assert services["gatekeeper"]["depends_on"]["redis"]["condition"] == "service_healthy"

    def test_every_mounted_path_exists(self, services):
        mounts = [mount for service in services.values() for mount in service.get("volumes", [])]
        local = [mount.split(":")[0] for mount in mounts if mount.startswith(".")]
        assert "./nginx.conf" in local
        for source in local:
            assert (DEPLOY / source).exists(), f"compose.yaml mounts {source}, which is missing"

    def test_nginx_serves_the_deployment_config_on_its_published_port(self, services):
        nginx = services["nginx"]
        assert "./nginx.conf:/etc/nginx/conf.d/default.conf:ro" in nginx["volumes"]
        [published] = nginx["ports"]
        [listen] = re.findall(r"^\s*listen\s+(\d+);", (DEPLOY / "nginx.conf").read_text(), re.M)
        assert published.split(":")[-1] == listen
        assert "ports" not in services["gatekeeper"]  # reached through nginx only

    def test_nginx_upstreams_name_the_services_on_the_ports_they_listen_on(self, services):
        servers = upstream_servers((DEPLOY / "nginx.conf").read_text())
        bind = services["gatekeeper"]["environment"]["GUNICORN_BIND"]
        assert servers == {
            "gatekeeper": [f"gatekeeper:{bind.rsplit(':', 1)[1]}"],
            "datasets": ["datasets:80"],  # the stock nginx image's port
        }


class TestEnvExample:
    def test_every_variable_compose_needs_is_in_it(self):
        text = (DEPLOY / "compose.yaml").read_text()
        needed = set(re.findall(r"\$\{(\w+)", text))
        assert needed <= set(env_example()), needed - set(env_example())

    def test_every_variable_in_it_is_read_by_someone(self):
        settings = {spec.metadata["env"] for spec in fields(Settings)}
        gunicorn = (REPO / "app" / "gunicorn_config.py").read_text()
        compose = (DEPLOY / "compose.yaml").read_text()
        for name in env_example():
            assert name in settings or f'"{name}"' in gunicorn or f"${{{name}" in compose, name

    def test_filled_in_it_makes_valid_settings(self):
        values = {
            **env_example(),
            "SECRET_KEY": "a-secret-key-of-forty-eight-characters-0123456789",
            "ORCID_CLIENT_ID": "APP-ABCDEFGHIJKLMNOP",
            "ORCID_CLIENT_SECRET": "secret",
            "REDIS_URL": "redis://:password@redis:6379/0",
        }
        settings = Settings.from_env(values)
        assert settings.public_url == "http://localhost:8080"


class TestDerivedNginxConfig:
    def test_it_is_the_tested_config_with_the_deployments_addresses(self):
        derived = load_derivation().derive(TESTED_NGINX.read_text())
        assert (DEPLOY / "nginx.conf").read_text() == derived, (
            "docs/deploy/nginx.conf is out of date: run python docs/deploy/derive_nginx_conf.py"
        )

    def test_it_has_the_tested_configs_locations_word_for_word(self):
        tested = blocks(TESTED_NGINX.read_text(), "location")
        deployed = blocks((DEPLOY / "nginx.conf").read_text(), "location")
        assert {"location = /_gatekeeper/auth", "location = /_gatekeeper/sign-in"} <= set(deployed)
        assert deployed == tested

    def test_a_tested_config_without_a_literal_it_replaces_is_refused(self):
        derivation = load_derivation()
        text = TESTED_NGINX.read_text().replace("server 127.0.0.1:8000;", "server 10.0.0.1:80;")
        with pytest.raises(ValueError, match="no longer contains"):
            derivation.derive(text)
