"""OpenID Connect (discovery, JWKS, ID tokens, userinfo) and /oauth/revoke, as ORCID serves them.

ID tokens are checked the way the gatekeeper checks them: by Authlib's Flask client
(``parse_id_token``) against the emulator served over HTTP, or by ``verify`` below, which
makes the same calls with the expectations open to change.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from authlib.integrations.flask_client import OAuth
from authlib.oidc.core.util import create_half_hash
from flask import Flask
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    MissingClaimError,
)
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

from app.emulator import create_app
from app.emulator.id_tokens import WRONG_AUDIENCE, WRONG_ISSUER
from app.emulator.server import serve_in_thread
from app.web.login import OrcidIDToken
from tests.emulator.conftest import (
    CLIENT_ID,
    LIMITED,
    ORCID_JSON,
    PUBLIC_CLIENT_ID,
    QUALIFIED,
    REDIRECT,
    SECRET,
    TEST_CLIENTS,
    get_code,
    query_of,
    token_form,
)

NONCE = "n-0S6_WzA2Mj"
LEEWAY = 120  # Authlib's default in parse_id_token
TEST_ISSUER = "http://localhost"  # the base URL Flask's test client requests


def exchange(client, persona: str = "qualified", scope: str = "openid", **authorize) -> dict:
    """Sign ``persona`` in through the shortcut and return the token response."""
    code = get_code(client, persona, scope=scope, **authorize)
    response = client.post("/oauth/token", data=token_form(code))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def verify(id_token: str, jwks: dict, *, issuer: str, access_token: str, nonce=NONCE, **params):
    """Check an ID token with the calls Authlib's ``parse_id_token`` makes; return its claims.

    The claims class is the gatekeeper's, which takes ORCID's string ``amr``; ``params``
    may set ``client_id`` (the expected audience) and ``now``.
    """
    now = params.pop("now", None)
    token = jwt.decode(
        id_token,
        KeySet.import_key_set(jwks),
        registry=JWSRegistry(algorithms=["RS256"], strict_check_header=False),
    )
    claims = OrcidIDToken(
        token.claims,
        token.header,
        {"iss": {"values": [issuer]}},
        {"nonce": nonce, "client_id": CLIENT_ID, "access_token": access_token, **params},
    )
    claims.validate(now=now, leeway=LEEWAY)
    return claims


def unverified(id_token: str) -> tuple[dict, dict]:
    """The header and claims of a JWT, read without checking anything."""
    header, payload, _ = id_token.split(".")
    return tuple(json.loads(base64.urlsafe_b64decode(part + "==")) for part in (header, payload))


@pytest.fixture
def base_url(app):
    url, stop = serve_in_thread(app)
    yield url
    stop()


@pytest.fixture
def relying_party(base_url):
    """ORCID registered with Authlib's Flask client, as a public client (no ``amr``)."""
    yield from _relying_party(base_url, PUBLIC_CLIENT_ID)


@pytest.fixture
def member_relying_party(base_url):
    """The same, as a member client: ORCID's ID tokens then carry ``amr`` as a string."""
    yield from _relying_party(base_url, CLIENT_ID)


def _relying_party(base_url: str, client_id: str):
    rp = Flask("relying_party")
    oauth = OAuth(rp)
    orcid = oauth.register(
        "orcid",
        client_id=client_id,
        client_secret=SECRET,
        server_metadata_url=f"{base_url}/.well-known/openid-configuration",
        client_kwargs={"scope": "openid", "token_endpoint_auth_method": "client_secret_post"},
    )
    with rp.app_context():
        yield orcid


def sign_in_over_http(base_url: str, nonce: str = NONCE, client_id: str = PUBLIC_CLIENT_ID) -> dict:
    response = requests.get(
        f"{base_url}/oauth/authorize",
        allow_redirects=False,
        params={
            "client_id": client_id,
            "response_type": "code",
            "scope": "openid",
            "redirect_uri": REDIRECT,
            "state": "s1",
            "nonce": nonce,
            "persona": "qualified",
            "decision": "authorize",
        },
        timeout=5,
    )
    code = parse_qs(urlsplit(response.headers["Location"]).query)["code"][0]
    form = token_form(code, client_id=client_id)
    token = requests.post(f"{base_url}/oauth/token", data=form, timeout=5)
    assert token.status_code == 200, token.text
    return token.json()


class TestDiscovery:
    def test_discovery_serves_orcids_fourteen_fields_under_the_base_url(self, base_url):
        response = requests.get(f"{base_url}/.well-known/openid-configuration", timeout=5)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/json"
        assert list(response.json().items()) == [
            ("issuer", base_url),
            ("authorization_endpoint", f"{base_url}/oauth/authorize"),
            ("token_endpoint", f"{base_url}/oauth/token"),
            ("userinfo_endpoint", f"{base_url}/oauth/userinfo"),
            ("jwks_uri", f"{base_url}/oauth/jwks"),
            ("id_token_signing_alg_values_supported", ["RS256"]),
            ("token_endpoint_auth_signing_alg_values_supported", ["RS256"]),
            ("claims_supported", ["family_name", "given_name", "name", "auth_time", "iss", "sub"]),
            ("scopes_supported", ["openid"]),
            ("subject_types_supported", ["public"]),
            ("response_types_supported", ["code", "id_token", "id_token token"]),
            ("claims_parameter_supported", False),
            ("token_endpoint_auth_methods_supported", ["client_secret_post"]),
            ("grant_types_supported", ["authorization_code", "implicit", "refresh_token"]),
        ]

    def test_issuer_follows_the_host_the_request_reached(self, client):
        body = client.get("/.well-known/openid-configuration", base_url="http://127.0.0.1:9")
        assert body.get_json()["issuer"] == "http://127.0.0.1:9"


class TestJwks:
    def test_jwks_has_one_rsa_signing_key_without_alg(self, client):
        response = client.get("/oauth/jwks")
        keys = response.get_json()["keys"]
        assert response.status_code == 200
        assert len(keys) == 1
        assert list(keys[0]) == ["kty", "e", "use", "kid", "n"]
        assert keys[0]["kty"] == "RSA" and keys[0]["e"] == "AQAB" and keys[0]["use"] == "sig"
        assert len(base64.urlsafe_b64decode(keys[0]["n"] + "==")) == 256  # 2048 bits

    def test_each_app_makes_its_own_key(self):
        first, second = (create_app(clients=TEST_CLIENTS).test_client() for _ in range(2))
        first_key, second_key = (
            c.get("/oauth/jwks").get_json()["keys"][0] for c in (first, second)
        )
        assert first_key["kid"] != second_key["kid"]
        assert first_key["n"] != second_key["n"]

    def test_the_jwks_key_verifies_an_id_token_for_authlib(self, relying_party, base_url):
        token = sign_in_over_http(base_url)
        userinfo = relying_party.parse_id_token(token, nonce=NONCE)
        assert userinfo["sub"] == QUALIFIED
        assert userinfo["iss"] == base_url
        assert userinfo["aud"] == PUBLIC_CLIENT_ID
        assert "amr" not in userinfo

    def test_authlibs_default_claims_refuse_a_member_clients_string_amr(
        self, member_relying_party, base_url
    ):
        # authlib#725: why the gatekeeper passes its own claims class (app/web/login.py).
        token = sign_in_over_http(base_url, client_id=CLIENT_ID)
        with pytest.raises(InvalidClaimError) as raised:
            member_relying_party.parse_id_token(token, nonce=NONCE)
        assert raised.value.claim == "amr"


class TestIdToken:
    def test_id_token_comes_last_in_the_token_response_when_openid_was_asked(self, client):
        body = exchange(client, scope="openid /read-limited", nonce=NONCE)
        assert list(body)[-3:] == ["name", "orcid", "id_token"]
        assert body["scope"] == "openid /read-limited"

    def test_id_token_carries_orcids_claims(self, client):
        body = exchange(client, nonce=NONCE)
        kid = client.get("/oauth/jwks").get_json()["keys"][0]["kid"]
        header, claims = unverified(body["id_token"])
        assert header["alg"] == "RS256" and header["kid"] == kid
        assert set(claims) == {
            "at_hash",
            "aud",
            "sub",
            "auth_time",
            "iss",
            "exp",
            "iat",
            "jti",
            "nonce",
            "family_name",
            "given_name",
            "amr",
        }
        assert claims["iss"] == TEST_ISSUER
        assert claims["sub"] == QUALIFIED
        assert claims["aud"] == CLIENT_ID
        assert claims["nonce"] == NONCE
        assert claims["exp"] == claims["iat"] + 24 * 60 * 60
        assert claims["auth_time"] <= claims["iat"]
        assert (claims["given_name"], claims["family_name"]) == ("Amara", "Okafor")

    def test_name_claim_is_the_credit_name_only_and_absent_without_one(self, client):
        _, with_credit = unverified(exchange(client, "self-issued")["id_token"])
        _, without = unverified(exchange(client, "qualified")["id_token"])
        assert with_credit["name"] == "Dr Ivo Novak"
        assert "name" not in without

    @pytest.mark.parametrize(
        "persona, amr", [("qualified", "pwd"), ("self-issued", "mfa")], ids=["pwd", "mfa"]
    )
    def test_member_clients_get_amr_as_one_string(self, client, persona, amr):
        _, claims = unverified(exchange(client, persona)["id_token"])
        assert claims["amr"] == amr

    def test_public_clients_get_no_amr(self, client):
        code = get_code(client, scope="openid", client_id=PUBLIC_CLIENT_ID, redirect_uri=REDIRECT)
        body = client.post("/oauth/token", data=token_form(code, client_id=PUBLIC_CLIENT_ID))
        _, claims = unverified(body.get_json()["id_token"])
        assert "amr" not in claims

    def test_at_hash_is_the_left_half_of_the_access_tokens_sha256(self, client):
        body = exchange(client, nonce=NONCE)
        _, claims = unverified(body["id_token"])
        assert claims["at_hash"] == create_half_hash(body["access_token"], "RS256").decode()

    def test_id_token_verifies_with_the_jwks(self, client):
        body = exchange(client, nonce=NONCE)
        jwks = client.get("/oauth/jwks").get_json()
        claims = verify(
            body["id_token"], jwks, issuer=TEST_ISSUER, access_token=body["access_token"]
        )
        assert claims["sub"] == QUALIFIED

    def test_each_id_token_has_its_own_jti(self, client):
        first, second = (unverified(exchange(client)["id_token"])[1] for _ in range(2))
        assert first["jti"] != second["jti"]

    def test_no_nonce_claim_when_none_was_sent(self, client):
        _, claims = unverified(exchange(client)["id_token"])
        assert "nonce" not in claims

    def test_nonce_is_carried_through_the_consent_page(self, client):
        page = client.get(
            "/oauth/authorize",
            query_string={
                "client_id": CLIENT_ID,
                "response_type": "code",
                "scope": "openid",
                "redirect_uri": REDIRECT,
                "nonce": NONCE,
            },
        ).get_data(as_text=True)
        assert f'name="nonce" value="{NONCE}"' in page
        response = client.post(
            "/oauth/authorize",
            data={
                "client_id": CLIENT_ID,
                "response_type": "code",
                "scope": "openid",
                "redirect_uri": REDIRECT,
                "nonce": NONCE,
                "persona": "qualified",
                "decision": "authorize",
            },
        )
        code = query_of(response.headers["Location"])["code"]
        body = client.post("/oauth/token", data=token_form(code)).get_json()
        assert unverified(body["id_token"])[1]["nonce"] == NONCE

    @pytest.mark.parametrize(
        "scope", ["/authenticate", "/read-limited", "/authenticate /read-limited"]
    )
    def test_no_id_token_without_the_openid_scope(self, client, scope):
        assert "id_token" not in exchange(client, scope=scope, nonce=NONCE)

    def test_a_hidden_name_leaves_the_name_claims_out(self, client):
        _, claims = unverified(exchange(client, "limited")["id_token"])
        assert claims["sub"] == LIMITED
        assert not claims.keys() & {"name", "given_name", "family_name"}


# Each tamper mode, the error Authlib raises for it, and the claim it names. Authlib's
# parse_id_token sets no expected "aud": a token for another audience fails the OIDC
# rule that it must then carry an "azp" naming this client, which ORCID never sends.
TAMPERS = [
    ("signature", BadSignatureError, None),
    ("issuer", InvalidClaimError, "iss"),
    ("audience", MissingClaimError, "azp"),
    ("nonce", InvalidClaimError, "nonce"),
    ("expired", ExpiredTokenError, "exp"),
    ("at_hash", InvalidClaimError, "at_hash"),
]


class TestTamper:
    @pytest.mark.parametrize("tamper, error, claim", TAMPERS, ids=[t[0] for t in TAMPERS])
    def test_authlib_rejects_a_tampered_id_token_for_that_reason(
        self, relying_party, base_url, tamper, error, claim
    ):
        knob = requests.post(f"{base_url}/_emulator/oidc", json={"tamper": tamper}, timeout=5)
        assert knob.json() == {"tamper": tamper}
        token = sign_in_over_http(base_url)
        with pytest.raises(error) as raised:
            relying_party.parse_id_token(token, nonce=NONCE)
        if claim is not None:
            assert raised.value.claim == claim

    @pytest.mark.parametrize(
        "tamper, expect",
        [
            ("issuer", {"issuer": WRONG_ISSUER}),
            ("audience", {"client_id": WRONG_AUDIENCE}),
            ("nonce", {"nonce": f"not-{NONCE}"}),
            ("expired", {"now": "iat"}),
        ],
        ids=["issuer", "audience", "nonce", "expired"],
    )
    def test_a_tampered_id_token_is_wrong_in_that_one_way_only(self, client, tamper, expect):
        client.post("/_emulator/oidc", json={"tamper": tamper})
        body = exchange(client, nonce=NONCE)
        if expect.get("now") == "iat":
            expect = {"now": unverified(body["id_token"])[1]["iat"]}
        jwks = client.get("/oauth/jwks").get_json()
        kwargs = {"issuer": TEST_ISSUER, "access_token": body["access_token"], **expect}
        assert verify(body["id_token"], jwks, **kwargs)["sub"] == QUALIFIED

    def test_a_wrong_signature_keeps_the_kid_and_right_claims(self, client):
        client.post("/_emulator/oidc", json={"tamper": "signature"})
        body = exchange(client, nonce=NONCE)
        jwks = client.get("/oauth/jwks").get_json()
        header, claims = unverified(body["id_token"])
        assert header["kid"] == jwks["keys"][0]["kid"]
        params = {"nonce": NONCE, "client_id": CLIENT_ID, "access_token": body["access_token"]}
        OrcidIDToken(claims, header, {"iss": {"values": [TEST_ISSUER]}}, params).validate()
        with pytest.raises(BadSignatureError):
            verify(body["id_token"], jwks, issuer=TEST_ISSUER, access_token=body["access_token"])

    def test_tamper_applies_to_every_token_until_reset(self, client):
        assert client.get("/_emulator/oidc").get_json() == {"tamper": "none"}
        client.post("/_emulator/oidc", json={"tamper": "issuer"})
        assert unverified(exchange(client)["id_token"])[1]["iss"] == WRONG_ISSUER
        assert unverified(exchange(client)["id_token"])[1]["iss"] == WRONG_ISSUER
        reset = client.post("/_emulator/reset").get_json()
        assert reset["oidc"] == {"tamper": "none"}
        assert client.get("/_emulator/oidc").get_json() == {"tamper": "none"}
        assert unverified(exchange(client)["id_token"])[1]["iss"] == TEST_ISSUER

    @pytest.mark.parametrize(
        "body",
        [{"tamper": "everything"}, {"tamper": None}, {}, {"tamper": "none", "extra": 1}, [1]],
        ids=["unknown-mode", "null-mode", "no-mode", "unknown-key", "not-an-object"],
    )
    def test_bad_tamper_settings_answer_400(self, client, body):
        response = client.post("/_emulator/oidc", json=body)
        assert response.status_code == 400
        assert "error" in response.get_json()
        assert client.get("/_emulator/oidc").get_json() == {"tamper": "none"}


class TestUserinfo:
    @pytest.mark.parametrize("method", ["GET", "POST"])
    @pytest.mark.parametrize("scope", ["openid", "/authenticate"])
    def test_userinfo_answers_the_iD_and_public_name(self, client, method, scope):
        token = exchange(client, scope=scope)["access_token"]
        response = client.open(
            "/oauth/userinfo", method=method, headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 200
        # OpenIDConnectUserInfo's fields, in its order; no credit name: "name" is null.
        assert list(response.get_json().items()) == [
            ("id", f"{TEST_ISSUER}/{QUALIFIED}"),
            ("sub", QUALIFIED),
            ("name", None),
            ("family_name", "Okafor"),
            ("given_name", "Amara"),
        ]

    def test_userinfo_name_is_the_credit_name(self, client):
        token = exchange(client, "self-issued")["access_token"]
        response = client.get("/oauth/userinfo", headers={"Authorization": f"Bearer {token}"})
        body = response.get_json()
        assert (body["name"], body["given_name"], body["family_name"]) == (
            "Dr Ivo Novak",
            "Ivo",
            "Novak",
        )

    def test_userinfo_carries_a_hidden_name_as_nulls(self, client):
        token = exchange(client, "limited")["access_token"]
        response = client.get("/oauth/userinfo", headers={"Authorization": f"Bearer {token}"})
        assert response.get_json() == {
            "id": f"{TEST_ISSUER}/{LIMITED}",
            "sub": LIMITED,
            "name": None,
            "family_name": None,
            "given_name": None,
        }

    @pytest.mark.parametrize(
        "authorization",
        ["Bearer 00000000-0000-4000-8000-000000000000", "Bearer ", "Basic abc", None, "scope"],
        ids=["unknown-token", "empty-token", "not-bearer", "no-header", "read-limited-only"],
    )
    def test_an_invalid_token_answers_403_with_orcids_hyphenated_body(self, client, authorization):
        if authorization == "scope":
            token = exchange(client, scope="/read-limited")["access_token"]
            authorization = f"Bearer {token}"
        headers = {"Authorization": authorization} if authorization else {}
        response = client.get("/oauth/userinfo", headers=headers)
        assert response.status_code == 403
        assert response.get_json() == {
            "error": "access_denied",
            "error-description": "access_token is invalid",
        }


def revoke_form(token: str | None, **overrides) -> dict:
    form = {"client_id": CLIENT_ID, "client_secret": SECRET, "token": token, **overrides}
    return {k: v for k, v in form.items() if v is not None}


class TestRevoke:
    @pytest.mark.parametrize("which", ["access_token", "refresh_token"])
    def test_revoked_token_then_gets_401_invalid_token_on_the_record_api(self, client, read, which):
        body = exchange(client, scope="/read-limited")
        assert read(f"/{QUALIFIED}/qualifications", body["access_token"]).status_code == 200
        response = client.post("/oauth/revoke", data=revoke_form(body[which]))
        assert response.status_code == 200
        assert response.get_data() == b""
        after = read(f"/{QUALIFIED}/qualifications", body["access_token"])
        assert after.status_code == 401
        assert after.get_json()["error"] == "invalid_token"

    def test_revoked_token_is_refused_by_userinfo(self, client):
        token = exchange(client)["access_token"]
        client.post("/oauth/revoke", data=revoke_form(token))
        response = client.get("/oauth/userinfo", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 403

    @pytest.mark.parametrize(
        "overrides",
        [
            {"client_secret": "wrong"},
            {"client_secret": None},
            {"client_id": "APP-NOBODY0000000001"},
        ],
        ids=["wrong-secret", "no-secret", "unknown-client"],
    )
    def test_bad_client_answers_401_invalid_client_and_revokes_nothing(
        self, client, read, overrides
    ):
        token = exchange(client, scope="/read-limited")["access_token"]
        response = client.post("/oauth/revoke", data=revoke_form(token, **overrides))
        assert response.status_code == 401
        assert response.get_json() == {
            "error": "invalid_client",
            "error_description": "Client authentication failed",
        }
        assert read(f"/{QUALIFIED}/qualifications", token).status_code == 200

    def test_a_client_cannot_revoke_another_clients_token(self, client, read):
        token = exchange(client, scope="/read-limited")["access_token"]
        response = client.post("/oauth/revoke", data=revoke_form(token, client_id=PUBLIC_CLIENT_ID))
        assert response.status_code == 200
        assert read(f"/{QUALIFIED}/qualifications", token).status_code == 200

    def test_unknown_token_answers_200(self, client):
        response = client.post("/oauth/revoke", data=revoke_form("no-such-token"))
        assert response.status_code == 200

    def test_missing_token_answers_400_invalid_request(self, client):
        response = client.post("/oauth/revoke", data=revoke_form(None))
        assert response.status_code == 400
        assert response.get_json()["error"] == "invalid_request"

    def test_json_body_answers_415(self, client):
        response = client.post("/oauth/revoke", json=revoke_form("abc"))
        assert response.status_code == 415


class TestCounters:
    def test_oidc_and_revoke_requests_are_counted(self, client):
        token = exchange(client)["access_token"]
        client.get("/.well-known/openid-configuration")
        client.get("/oauth/jwks")
        client.get("/oauth/jwks")
        client.post("/oauth/userinfo", headers={"Authorization": f"Bearer {token}"})
        client.post("/oauth/revoke", data=revoke_form(token))
        counts = client.get("/_emulator/requests").get_json()
        assert (counts["discovery"], counts["jwks"], counts["userinfo"], counts["revoke"]) == (
            1,
            2,
            1,
            1,
        )

    def test_jwks_can_be_faulted_like_any_endpoint(self, client):
        client.post("/_emulator/faults", json={"status": 503, "endpoints": ["jwks"]})
        assert client.get("/oauth/jwks").status_code == 503
        assert client.get("/.well-known/openid-configuration").status_code == 200


def test_record_reads_still_work_with_an_openid_token(client, read):
    token = exchange(client)["access_token"]
    response = read(f"/{QUALIFIED}/person", token)
    assert response.status_code == 200
    assert response.mimetype == ORCID_JSON
