"""Fault knobs and request counters, through the /_emulator/ control API."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from app.emulator.server import serve_in_thread
from tests.emulator.conftest import ORCID_JSON, QUALIFIED


class TestFaults:
    def test_503_fault_applies_until_reset(self, client, read):
        set_ = client.post(
            "/_emulator/faults", json={"status": 503, "rate": 1.0, "endpoints": ["qualifications"]}
        )
        assert set_.status_code == 200
        failed = read(f"/{QUALIFIED}/qualifications")
        assert failed.status_code == 503
        assert failed.get_json()["response-code"] == 503
        assert read(f"/{QUALIFIED}/person").status_code == 200  # not a faulted endpoint
        assert client.post("/_emulator/reset").status_code == 200
        assert read(f"/{QUALIFIED}/qualifications").status_code == 200

    def test_429_fault_carries_retry_after(self, client, read):
        client.post("/_emulator/faults", json={"status": 429})
        response = read(f"/{QUALIFIED}/qualifications")
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "1"

    def test_503_fault_carries_the_retry_after_asked_for(self, client, read):
        client.post("/_emulator/faults", json={"status": 503, "retry_after": 7})
        assert read(f"/{QUALIFIED}/qualifications").headers["Retry-After"] == "7"

    def test_rate_zero_never_fails(self, client, read):
        client.post("/_emulator/faults", json={"status": 503, "rate": 0.0})
        assert all(read(f"/{QUALIFIED}/qualifications").status_code == 200 for _ in range(5))

    def test_token_endpoint_can_fail_too(self, client):
        client.post("/_emulator/faults", json={"status": 502, "endpoints": ["token"]})
        assert client.post("/oauth/token", data={}).status_code == 502

    def test_faults_read_back_as_set(self, client):
        settings = {
            "latency_ms": 50,
            "status": 503,
            "rate": 0.5,
            "retry_after": 1,
            "endpoints": ["qualifications"],
        }
        client.post("/_emulator/faults", json=settings)
        assert client.get("/_emulator/faults").get_json() == settings

    @pytest.mark.parametrize(
        "body",
        [{"status": 200}, {"rate": 2}, {"endpoints": ["works"]}, {"latency": 5}, [1]],
        ids=[
            "non-error-status",
            "rate-above-one",
            "unknown-endpoint",
            "unknown-key",
            "not-an-object",
        ],
    )
    def test_bad_fault_settings_answer_400(self, client, body):
        response = client.post("/_emulator/faults", json=body)
        assert response.status_code == 400
        assert "error" in response.get_json()


class TestCounters:
    def test_requests_are_counted_per_endpoint_kind(self, client, read, sign_in):
        token = sign_in("qualified")  # one authorize, one token
        read(f"/{QUALIFIED}/qualifications", token)
        read(f"/{QUALIFIED}/qualification/1001", token)
        read(f"/{QUALIFIED}/qualification/1002", token)
        read(f"/{QUALIFIED}/person")
        assert client.get("/_emulator/requests").get_json() == {
            "authorize": 1,
            "token": 1,
            "qualifications": 1,
            "qualification": 2,
            "person": 1,
            "discovery": 0,
            "jwks": 0,
            "userinfo": 0,
            "revoke": 0,
            "qualification_create": 0,
            "qualification_update": 0,
            "qualification_delete": 0,
        }

    def test_reset_zeroes_the_counters(self, client, read):
        read(f"/{QUALIFIED}/qualifications")
        client.post("/_emulator/reset")
        assert set(client.get("/_emulator/requests").get_json().values()) == {0}

    def test_faulted_requests_are_counted(self, client, read):
        client.post("/_emulator/faults", json={"status": 503})
        read(f"/{QUALIFIED}/qualifications")
        assert client.get("/_emulator/requests").get_json()["qualifications"] == 1

    def test_concurrent_requests_are_all_counted(self, app):
        base_url, stop = serve_in_thread(app)
        try:
            with requests.Session() as session, ThreadPoolExecutor(max_workers=16) as pool:
                url = f"{base_url}/v3.0/{QUALIFIED}/qualification/1001"
                statuses = list(
                    pool.map(
                        lambda _: session.get(url, headers={"Accept": ORCID_JSON}).status_code,
                        range(64),
                    )
                )
            counts = requests.get(f"{base_url}/_emulator/requests").json()
        finally:
            stop()
        assert statuses == [200] * 64
        assert counts["qualification"] == 64
