"""Metrics summed over gunicorn workers, JSON decision logs without secrets, health checks."""

import json
import re

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import sign_in

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def samples(text: str) -> dict:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            found[key] = found.get(key, 0) + sample.value
    return found


def value(found, name, **labels):
    return found.get((name, tuple(sorted(labels.items()))), 0)


@pytest.fixture
def traffic(start_gatekeeper, redis_url, orcid):
    """Two workers serve a known mix of checks."""
    gatekeeper = start_gatekeeper(redis_url=redis_url, workers=2)
    qualified, _ = sign_in(gatekeeper.url, "qualified")
    refused, _ = sign_in(gatekeeper.url, "self-asserted")
    headers = {"X-Original-URI": "/datasets/sail-cohort/file.csv"}
    for _ in range(12):
        assert qualified.get(f"{gatekeeper.url}/auth", headers=headers, timeout=15).ok
    assert refused.get(f"{gatekeeper.url}/auth", headers=headers, timeout=15).status_code == 403
    assert requests.get(f"{gatekeeper.url}/auth", headers=headers, timeout=5).status_code == 401
    assert (
        qualified.get(
            f"{gatekeeper.url}/auth", headers={"X-Original-URI": "/nowhere"}, timeout=5
        ).status_code
        == 403
    )
    return gatekeeper, qualified


class TestMetrics:
    def test_counts_add_up_across_workers(self, traffic):
        gatekeeper, _ = traffic
        response = requests.get(f"{gatekeeper.url}/metrics", timeout=5)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        found = samples(response.text)
        checks = "gatekeeper_auth_checks_total"
        assert value(found, checks, outcome="allow") == 12
        assert value(found, checks, outcome="deny") == 1
        assert value(found, checks, outcome="unauthenticated") == 1
        assert value(found, checks, outcome="no_dataset") == 1
        lookups = "gatekeeper_cache_lookups_total"
        assert value(found, lookups, result="miss") == 2  # one per researcher
        assert (
            value(found, lookups, result="hit_memory") + value(found, lookups, result="hit_store")
        ) == 11
        assert value(found, "gatekeeper_decisions_total", outcome="allow") == 1
        assert (
            value(found, "gatekeeper_orcid_requests_total", endpoint="qualifications", status="200")
            == 2
        )
        assert (
            value(found, "gatekeeper_orcid_request_seconds_count", endpoint="qualifications") == 2
        )
        assert value(found, "gatekeeper_policy_loads_total", result="ok") == 1  # in the master

    def test_build_and_policy_version_are_labelled_and_no_created_series(self, traffic):
        gatekeeper, _ = traffic
        text = requests.get(f"{gatekeeper.url}/metrics", timeout=5).text
        found = samples(text)
        version = requests.get(f"{gatekeeper.url}/readyz", timeout=5).json()["policy_version"]
        assert value(found, "gatekeeper_policy_version_info", version=version) == 1
        assert value(found, "gatekeeper_policy_ok") == 1  # every worker's, not the master's
        builds = [key for key in found if key[0] == "gatekeeper_build_info"]
        assert builds and all(found[key] == 1 for key in builds)
        assert dict(builds[0][1])["version"] == "0.1.0"
        assert "_created" not in text


class TestLogs:
    def test_each_decision_is_one_json_line_without_secrets(self, traffic, tmp_path):
        _gatekeeper, browser = traffic
        log = (tmp_path / "gatekeeper.log").read_text()
        lines = [json.loads(line) for line in log.splitlines() if line.strip()]
        decisions = [line for line in lines if line["message"] == "decision"]
        assert len(decisions) == 2
        by_outcome = {d["outcome"]: d for d in decisions}
        assert by_outcome["allow"]["dataset"] == "sail-cohort"
        assert re.fullmatch(r"\d{4}-\d{4}-\d{4}-\d{3}[\dX]", by_outcome["allow"]["orcid"])
        assert "wrong_source" in by_outcome["deny"]["reasons"]
        assert by_outcome["allow"]["policy_version"] == by_outcome["deny"]["policy_version"]
        # Never a token (the emulator issues UUIDs) or the session cookie.
        assert not UUID.search(log)
        assert browser.cookies["gatekeeper_session"] not in log

    def test_start_up_is_one_line_naming_policy_orcid_and_redis(self, traffic, tmp_path):
        log = (tmp_path / "gatekeeper.log").read_text()
        lines = [json.loads(line) for line in log.splitlines() if line.strip()]
        # gunicorn preloads the app in its master: one line, however many workers.
        [started] = [line for line in lines if line["message"] == "started"]
        assert started["redis"] == "answered"
        assert re.fullmatch(r"[0-9a-f]{16}", started["policy_version"])
        assert started["orcid_api_url"].startswith("http://127.0.0.1:")
        assert started["orcid_base_url"].startswith("http://127.0.0.1:")


class TestHealth:
    def test_healthz_and_readyz(self, start_gatekeeper, redis_url):
        gatekeeper = start_gatekeeper(redis_url=redis_url)
        assert requests.get(f"{gatekeeper.url}/healthz", timeout=5).json() == {"status": "ok"}
        ready = requests.get(f"{gatekeeper.url}/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["status"] == "ready"

    @pytest.mark.parametrize("refusal", ["read-only replica", "full"])
    def test_readyz_is_not_ready_while_redis_refuses_writes(
        self, start_gatekeeper, redis_url, redis_server, refusal
    ):
        # PING still answers, while every sign-in fails: /readyz must say so.
        gatekeeper = start_gatekeeper(redis_url=redis_url, workers=1)
        readyz = f"{gatekeeper.url}/readyz"
        assert requests.get(readyz, timeout=5).status_code == 200
        client = redis_server.client
        try:
            if refusal == "full":
                client.config_set("maxmemory", "1")  # noeviction, Redis's default policy
            else:
                client.replicaof("127.0.0.1", "1")  # following a primary that is not there
            ready = requests.get(readyz, timeout=5)
            assert ready.status_code == 503
            [problem] = ready.json()["problems"]
            assert problem.startswith("Redis refuses writes: "), problem
        finally:
            client.replicaof("NO", "ONE")
            client.config_set("maxmemory", "0")
        assert requests.get(readyz, timeout=5).status_code == 200

    def test_readyz_reports_a_policy_edit_that_does_not_load(
        self, start_gatekeeper, redis_url, tmp_path
    ):
        import shutil

        from tests.integration.conftest import REPO

        policies = tmp_path / "policies"
        shutil.copytree(REPO / "policies", policies)
        gatekeeper = start_gatekeeper(redis_url=redis_url, POLICY_PATH=str(policies))
        # Staged, then swapped in: a watcher must never read it half-written.
        staged = policies / "datasets.yaml.new"
        staged.write_text("version: 1\ndatasets: {broken: {}}\n")
        staged.replace(policies / "datasets.yaml")
        import time

        # Policy files are looked at once a second and reloaded off the request path.
        deadline = time.monotonic() + 10
        while True:
            ready = requests.get(f"{gatekeeper.url}/readyz", timeout=5)
            if not ready.json()["policy"]["ok"] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        # Still ready: the last good policy serves; the problem is reported, not fatal.
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        problem = ready.json()["policy"]["problem"]
        assert "still serving the previous one" in problem
        assert "datasets.broken.paths: is required" in problem
        exposition = requests.get(f"{gatekeeper.url}/metrics", timeout=5).text
        assert "gatekeeper_policy_ok 0.0" in exposition
