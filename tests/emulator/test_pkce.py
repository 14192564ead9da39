"""PKCE at the emulator (RFC 7636, S256 only): optional, as at ORCID, and binding when used."""

from __future__ import annotations

import pytest

from app.emulator.tokens import s256_challenge, verifier_matches
from tests.emulator.conftest import authorize_params, get_code, query_of, token_form

# RFC 7636 Appendix B.
RFC_VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
RFC_CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
PKCE = {"code_challenge": RFC_CHALLENGE, "code_challenge_method": "S256"}


class TestChallenge:
    def test_s256_matches_the_rfc_example(self):
        assert s256_challenge(RFC_VERIFIER) == RFC_CHALLENGE

    @pytest.mark.parametrize(
        "verifier",
        [None, "", RFC_VERIFIER[:-1] + "l", "a" * 42, "a" * 129, RFC_VERIFIER[:-1] + "+"],
        ids=["none", "empty", "another", "too-short", "too-long", "bad-character"],
    )
    def test_a_missing_wrong_or_malformed_verifier_does_not_match(self, verifier):
        assert not verifier_matches(verifier, RFC_CHALLENGE)


class TestCodeExchange:
    def test_a_code_with_a_challenge_is_exchanged_with_its_verifier(self, client):
        code = get_code(client, **PKCE)
        response = client.post("/oauth/token", data=token_form(code, code_verifier=RFC_VERIFIER))
        assert response.status_code == 200, response.get_data(as_text=True)

    @pytest.mark.parametrize(
        "verifier", [None, "x" * 43], ids=["without-verifier", "wrong-verifier"]
    )
    def test_without_the_verifier_the_code_is_invalid_and_spent(self, client, verifier):
        code = get_code(client, **PKCE)
        refused = client.post("/oauth/token", data=token_form(code, code_verifier=verifier))
        assert refused.status_code == 400
        assert refused.get_json()["error"] == "invalid_grant"
        # Single-use either way: the right verifier afterwards finds the code spent.
        again = client.post("/oauth/token", data=token_form(code, code_verifier=RFC_VERIFIER))
        assert again.status_code == 400

    def test_pkce_is_optional_a_code_without_a_challenge_ignores_a_verifier(self, client):
        code = get_code(client)
        response = client.post("/oauth/token", data=token_form(code, code_verifier=RFC_VERIFIER))
        assert response.status_code == 200

    def test_the_consent_form_carries_the_challenge_to_the_code(self, client):
        page = client.get("/oauth/authorize", query_string=authorize_params(**PKCE))
        assert f'name="code_challenge" value="{RFC_CHALLENGE}"' in page.get_data(as_text=True)
        form = authorize_params(persona="qualified", decision="authorize", **PKCE)
        code = query_of(client.post("/oauth/authorize", data=form).headers["Location"])["code"]
        assert client.post("/oauth/token", data=token_form(code)).status_code == 400


class TestAuthorize:
    @pytest.mark.parametrize(
        "pkce, description",
        [
            ({"code_challenge": RFC_CHALLENGE}, "code_challenge_method must be S256"),
            (
                {"code_challenge": RFC_VERIFIER, "code_challenge_method": "plain"},
                "code_challenge_method must be S256",
            ),
            (
                {"code_challenge": "short", "code_challenge_method": "S256"},
                "Invalid code_challenge",
            ),
            ({"code_challenge_method": "S256"}, "Invalid code_challenge"),
        ],
        ids=["no-method", "plain", "malformed-challenge", "method-without-challenge"],
    )
    def test_a_bad_challenge_redirects_with_invalid_request(self, client, pkce, description):
        response = client.get(
            "/oauth/authorize",
            query_string=authorize_params(persona="qualified", decision="authorize", **pkce),
        )
        assert response.status_code == 302
        query = query_of(response.headers["Location"])
        assert query["error"] == "invalid_request"
        assert query["error_description"] == description
        assert query["state"] == "xyz" and "code" not in query
