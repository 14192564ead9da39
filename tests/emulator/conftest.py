"""Fixtures for the ORCID emulator's tests: an app with test clients, and signing in."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from app.emulator import create_app

CLIENT_ID = "APP-TESTCLIENT000001"
SECRET = "test-secret"
PUBLIC_CLIENT_ID = "APP-PUBLICCLIENT0001"  # a public (non-member) client
REDIRECT = "http://127.0.0.1:5000/callback"
ORCID_JSON = "application/vnd.orcid+json"

QUALIFIED = "0009-0000-0000-0017"
SELF_ASSERTED = "0009-0000-0000-0025"
LOCKED = "0009-0000-0000-0076"
DEACTIVATED = "0009-0000-0000-0084"
DEPRECATED = "0009-0000-0000-0092"
LIMITED = "0009-0000-0000-0105"

TEST_CLIENTS = [
    {
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "name": "Test Service",
        "member": True,
        "redirect_uris": "any-loopback",
    },
    {
        "client_id": PUBLIC_CLIENT_ID,
        "client_secret": SECRET,
        "name": "Public Client",
        "member": False,
        "redirect_uris": [REDIRECT],
    },
]


@pytest.fixture(scope="session")
def signing_key():
    """One RSA key for every test's emulator: making a 2048-bit key per app is slow."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def app(signing_key):
    return create_app(clients=TEST_CLIENTS, signing_key=signing_key)


@pytest.fixture
def client(app):
    return app.test_client()


def authorize_params(**overrides) -> dict:
    params = {
        "client_id": CLIENT_ID,
        "response_type": "code",
        "scope": "/authenticate",
        "redirect_uri": REDIRECT,
        "state": "xyz",
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def get_code(client, persona: str = "qualified", **overrides) -> str:
    response = client.get(
        "/oauth/authorize",
        query_string=authorize_params(persona=persona, decision="authorize", **overrides),
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    return query_of(response.headers["Location"])["code"]


def token_form(code: str, /, **overrides) -> dict:
    form = {
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
    }
    form.update(overrides)
    return {k: v for k, v in form.items() if v is not None}


@pytest.fixture
def sign_in(client):
    """Sign a persona in with ``scope`` and return the access token."""

    def sign_in(persona: str = "qualified", scope: str = "/authenticate") -> str:
        code = get_code(client, persona, scope=scope)
        response = client.post("/oauth/token", data=token_form(code))
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()["access_token"]

    return sign_in


@pytest.fixture
def read(client):
    """GET a record path with ORCID's JSON Accept header, and optionally a bearer token."""

    def read(path: str, token: str | None = None):
        headers = {"Accept": ORCID_JSON}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return client.get("/v3.0" + path, headers=headers)

    return read
