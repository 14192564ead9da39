"""Sign-in with openid in scope: the ID token is verified, or there is no session.

Run for a public client (``openid``) and for a member client (``openid /read-limited``),
whose ID tokens carry ORCID's ``amr`` as one string (authlib#725).
"""

import pytest
import requests
from flask import Flask

from app.emulator import create_app
from app.emulator.server import serve_in_thread
from tests.integration.conftest import EMULATOR_CLIENT, Emulator, sign_in

MEMBER_CLIENT = {
    "client_id": "APP-GATEKEEPERMEMBER",
    "client_secret": "member-secret",
    "name": "Gatekeeper under test (member)",
    "redirect_uris": "any-loopback",
    "member": True,
}
SECRET_KEY = "integration-test-secret-key-0123456789"  # conftest.gatekeeper_env's


@pytest.fixture(scope="module")
def emulator():
    """An emulator knowing a member client too (overrides conftest's for this module)."""
    base_url, shutdown = serve_in_thread(create_app(clients=[EMULATOR_CLIENT, MEMBER_CLIENT]))
    yield Emulator(base_url)
    shutdown()


@pytest.fixture(params=["public", "member"])
def openid_gatekeeper(request, start_gatekeeper, redis_url, orcid):
    if request.param == "public":
        return start_gatekeeper(redis_url=redis_url, ORCID_SCOPE="openid")
    return member_gatekeeper(start_gatekeeper, redis_url, orcid)


def member_gatekeeper(start_gatekeeper, redis_url, orcid):
    # The README's member setup: /read-limited on the member API, with openid.
    return start_gatekeeper(
        redis_url=redis_url,
        ORCID_SCOPE="openid /read-limited",
        ORCID_CLIENT_ID=MEMBER_CLIENT["client_id"],
        ORCID_CLIENT_SECRET=MEMBER_CLIENT["client_secret"],
        ORCID_API_URL=f"{orcid.url}/api/v3.0",
    )


def tamper(orcid, mode):
    requests.post(
        f"{orcid.url}/_emulator/oidc", json={"tamper": mode}, timeout=5
    ).raise_for_status()


def signed_session(browser: requests.Session) -> dict:
    """The gatekeeper's session cookie, its signature checked with the gatekeeper's key."""
    app = Flask("reader")
    app.secret_key = SECRET_KEY
    serializer = app.session_interface.get_signing_serializer(app)
    return serializer.loads(browser.cookies["gatekeeper_session"])


def test_a_valid_id_token_signs_the_researcher_in(openid_gatekeeper, orcid):
    browser, response = sign_in(openid_gatekeeper.url, "qualified", "/datasets/sail-cohort")
    assert response.status_code == 302, response.text
    assert response.headers["Location"] == "/datasets/sail-cohort"
    assert orcid.requests()["jwks"] >= 1
    check = browser.get(f"{openid_gatekeeper.url}/auth?dataset=sail-cohort", timeout=15)
    assert check.status_code == 200


@pytest.mark.parametrize(
    "persona, amr", [("qualified", ["pwd"]), ("self-issued", ["mfa"])], ids=["pwd", "mfa"]
)
def test_a_member_sign_in_keeps_orcids_amr_in_the_session(
    start_gatekeeper, redis_url, orcid, persona, amr
):
    gatekeeper = member_gatekeeper(start_gatekeeper, redis_url, orcid)
    browser, response = sign_in(gatekeeper.url, persona, "/")
    assert response.status_code == 302, response.text
    assert signed_session(browser)["researcher"]["amr"] == amr


def test_a_public_client_sign_in_has_no_amr(start_gatekeeper, redis_url, orcid):
    gatekeeper = start_gatekeeper(redis_url=redis_url, ORCID_SCOPE="openid")
    browser, response = sign_in(gatekeeper.url, "qualified", "/")
    assert response.status_code == 302, response.text
    assert signed_session(browser)["researcher"]["amr"] == []


@pytest.mark.parametrize(
    "mode", ["signature", "issuer", "audience", "nonce", "expired", "at_hash", "subject"]
)
def test_a_bad_id_token_is_refused_with_no_session(openid_gatekeeper, orcid, mode):
    tamper(orcid, mode)
    browser, response = sign_in(openid_gatekeeper.url, "qualified")
    assert response.status_code == 400
    assert "could not be verified" in response.text
    check = browser.get(f"{openid_gatekeeper.url}/auth?dataset=sail-cohort", timeout=15)
    assert check.status_code == 401
