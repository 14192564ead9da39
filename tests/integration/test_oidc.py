"""Sign-in with openid in scope: the ID token is verified, or there is no session."""

import pytest
import requests

from tests.integration.conftest import sign_in


@pytest.fixture
def openid_gatekeeper(start_gatekeeper, redis_url, orcid):
    return start_gatekeeper(redis_url=redis_url, ORCID_SCOPE="openid")


def tamper(orcid, mode):
    requests.post(
        f"{orcid.url}/_emulator/oidc", json={"tamper": mode}, timeout=5
    ).raise_for_status()


def test_a_valid_id_token_signs_the_researcher_in(openid_gatekeeper, orcid):
    browser, response = sign_in(openid_gatekeeper.url, "qualified", "/datasets/sail-cohort")
    assert response.status_code == 302, response.text
    assert response.headers["Location"] == "/datasets/sail-cohort"
    assert orcid.requests()["jwks"] >= 1
    check = browser.get(f"{openid_gatekeeper.url}/auth?dataset=sail-cohort", timeout=15)
    assert check.status_code == 200


@pytest.mark.parametrize("mode", ["signature", "issuer", "audience", "nonce", "expired"])
def test_a_bad_id_token_is_refused_with_no_session(openid_gatekeeper, orcid, mode):
    tamper(orcid, mode)
    browser, response = sign_in(openid_gatekeeper.url, "qualified")
    assert response.status_code == 400
    assert "could not be verified" in response.text
    check = browser.get(f"{openid_gatekeeper.url}/auth?dataset=sail-cohort", timeout=15)
    assert check.status_code == 401
