"""The emulator's /oauth/authorize and /oauth/token behave as ORCID's do."""

from __future__ import annotations

import re

import pytest

from tests.emulator.conftest import (
    CLIENT_ID,
    ORCID_JSON,
    PUBLIC_CLIENT_ID,
    QUALIFIED,
    REDIRECT,
    SECRET,
    authorize_params,
    get_code,
    query_of,
    token_form,
)


class TestAuthorize:
    def test_consent_page_lists_personas_with_authorize_and_deny_buttons(self, client):
        response = client.get("/oauth/authorize", query_string=authorize_params())
        page = response.get_data(as_text=True)
        assert response.status_code == 200
        assert response.mimetype == "text/html"
        assert 'name="persona" value="qualified"' in page
        assert QUALIFIED in page
        assert 'value="authorize"' in page and 'value="deny"' in page
        assert "Test Service" in page
        assert f'name="redirect_uri" value="{REDIRECT}"' in page

    def test_submitting_the_consent_form_redirects_with_code_and_state(self, client):
        form = authorize_params(persona="qualified", decision="authorize")
        response = client.post("/oauth/authorize", data=form)
        assert response.status_code == 302
        assert response.headers["Location"].startswith(REDIRECT + "?")
        assert query_of(response.headers["Location"])["state"] == "xyz"

    def test_shortcut_redirects_with_a_six_character_code_and_the_state(self, client):
        response = client.get(
            "/oauth/authorize",
            query_string=authorize_params(persona=QUALIFIED, decision="authorize"),
        )
        assert response.status_code == 302
        query = query_of(response.headers["Location"])
        assert re.fullmatch(r"[A-Za-z0-9]{6}", query["code"])
        assert query["state"] == "xyz"

    def test_deny_redirects_with_access_denied_and_the_state(self, client):
        response = client.get("/oauth/authorize", query_string=authorize_params(decision="deny"))
        assert response.status_code == 302
        location = response.headers["Location"]
        assert location == (
            f"{REDIRECT}?error=access_denied&error_description=User+denied+access&state=xyz"
        )

    @pytest.mark.parametrize(
        "overrides",
        [
            {"client_id": "APP-UNKNOWN000000001"},
            {"client_id": None},
            {"redirect_uri": "https://evil.example/callback"},
            {"redirect_uri": None},
        ],
        ids=["unknown-client", "no-client", "foreign-redirect", "no-redirect"],
    )
    def test_bad_client_or_redirect_uri_answers_400_without_redirecting(self, client, overrides):
        response = client.get(
            "/oauth/authorize",
            query_string=authorize_params(persona="qualified", decision="authorize", **overrides),
        )
        assert response.status_code == 400
        assert "Location" not in response.headers
        assert response.get_json()["error"] == "invalid_request"

    def test_redirect_uri_must_be_registered_exactly_for_a_listed_client(self, client):
        response = client.get(
            "/oauth/authorize",
            query_string=authorize_params(
                client_id=PUBLIC_CLIENT_ID, redirect_uri="http://127.0.0.1:5001/callback"
            ),
        )
        assert response.status_code == 400

    def test_wrong_response_type_redirects_with_unsupported_response_type(self, client):
        response = client.get(
            "/oauth/authorize", query_string=authorize_params(response_type="token")
        )
        assert response.status_code == 302
        assert query_of(response.headers["Location"])["error"] == "unsupported_response_type"

    @pytest.mark.parametrize(
        "client_id, scope",
        [(CLIENT_ID, "/write-everything"), (CLIENT_ID, None), (PUBLIC_CLIENT_ID, "/read-limited")],
        ids=["unknown-scope", "no-scope", "member-scope-for-public-client"],
    )
    def test_bad_scope_redirects_with_invalid_scope(self, client, client_id, scope):
        response = client.get(
            "/oauth/authorize", query_string=authorize_params(client_id=client_id, scope=scope)
        )
        assert response.status_code == 302
        assert query_of(response.headers["Location"])["error"] == "invalid_scope"

    def test_redirect_keeps_the_query_the_redirect_uri_already_has(self, client):
        uri = "http://localhost:9999/cb?next=%2Fdatasets"
        response = client.get(
            "/oauth/authorize",
            query_string=authorize_params(
                redirect_uri=uri, persona="qualified", decision="authorize"
            ),
        )
        query = query_of(response.headers["Location"])
        assert query["next"] == "/datasets" and "code" in query

    def test_unknown_persona_answers_400(self, client):
        response = client.get(
            "/oauth/authorize",
            query_string=authorize_params(persona="nobody", decision="authorize"),
        )
        assert response.status_code == 400


class TestToken:
    def test_code_exchange_answers_orcids_token_json_exactly(self, client):
        code = get_code(client, "qualified", scope="/authenticate /read-limited")
        response = client.post("/oauth/token", data=token_form(code))
        body = response.get_json()
        assert response.status_code == 200
        assert list(body) == [
            "access_token",
            "token_type",
            "refresh_token",
            "expires_in",
            "scope",
            "name",
            "orcid",
        ]
        assert re.fullmatch(
            r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", body["access_token"]
        )
        assert body["token_type"] == "bearer"
        assert body["expires_in"] == 631138518
        assert body["scope"] == "/authenticate /read-limited"
        assert body["name"] == "Amara Okafor"
        assert body["orcid"] == QUALIFIED

    def test_name_is_null_when_the_persona_hides_it(self, client):
        code = get_code(client, "limited")
        assert client.post("/oauth/token", data=token_form(code)).get_json()["name"] is None

    def test_a_code_works_only_once(self, client):
        code = get_code(client)
        assert client.post("/oauth/token", data=token_form(code)).status_code == 200
        again = client.post("/oauth/token", data=token_form(code))
        assert again.status_code == 400
        assert again.get_json()["error"] == "invalid_grant"

    @pytest.mark.parametrize(
        "overrides",
        [
            {"code": "NOSUCH"},
            {"redirect_uri": "http://127.0.0.1:5000/other"},
            {"redirect_uri": None},
        ],
        ids=["unknown-code", "other-redirect-uri", "no-redirect-uri"],
    )
    def test_bad_code_or_redirect_uri_answers_invalid_grant(self, client, overrides):
        code = get_code(client)
        response = client.post("/oauth/token", data=token_form(code, **overrides))
        assert response.status_code == 400
        assert response.get_json()["error"] == "invalid_grant"

    @pytest.mark.parametrize(
        "overrides",
        [
            {"client_secret": "wrong"},
            {"client_secret": None},
            {"client_id": "APP-NOBODY0000000001"},
        ],
        ids=["wrong-secret", "no-secret", "unknown-client"],
    )
    def test_bad_client_credentials_answer_401_invalid_client(self, client, overrides):
        code = get_code(client)
        response = client.post("/oauth/token", data=token_form(code, **overrides))
        assert response.status_code == 401
        assert response.get_json() == {
            "error": "invalid_client",
            "error_description": "Client authentication failed",
        }

    def test_json_body_answers_415(self, client):
        code = get_code(client)
        response = client.post("/oauth/token", json=token_form(code))
        assert response.status_code == 415

    def test_missing_grant_type_answers_unsupported_grant_type(self, client):
        response = client.post("/oauth/token", data=token_form("abc", grant_type=None))
        assert response.status_code == 400
        assert response.get_json()["error"] == "unsupported_grant_type"

    def test_client_credentials_give_a_read_public_token_for_no_researcher(self, client):
        response = client.post(
            "/oauth/token",
            data={
                "client_id": CLIENT_ID,
                "client_secret": SECRET,
                "grant_type": "client_credentials",
                "scope": "/read-public",
            },
        )
        body = response.get_json()
        assert response.status_code == 200
        assert list(body) == [
            "access_token",
            "token_type",
            "refresh_token",
            "expires_in",
            "scope",
            "orcid",
        ]
        assert body["orcid"] is None and body["scope"] == "/read-public"

    def test_client_credentials_refuse_other_scopes(self, client):
        response = client.post(
            "/oauth/token",
            data={
                "client_id": CLIENT_ID,
                "client_secret": SECRET,
                "grant_type": "client_credentials",
                "scope": "/read-limited",
            },
        )
        assert response.status_code == 400
        assert response.get_json()["error"] == "invalid_scope"


def code_token(client, persona: str = "qualified", scope: str = "/read-limited") -> dict:
    code = get_code(client, persona, scope=scope)
    response = client.post("/oauth/token", data=token_form(code))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def refresh(client, refresh_token: str, **extra):
    form = {
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        **extra,
    }
    return client.post("/oauth/token", data=form)


def reads(client, token: str) -> int:
    headers = {"Accept": ORCID_JSON, "Authorization": f"Bearer {token}"}
    return client.get(f"/v3.0/{QUALIFIED}/qualifications", headers=headers).status_code


class TestRefreshToken:
    def test_a_refresh_token_gets_a_new_pair_and_the_old_token_stays_live(self, client):
        first = code_token(client)
        response = refresh(client, first["refresh_token"])
        body = response.get_json()
        assert response.status_code == 200
        assert list(body) == [
            "access_token",
            "token_type",
            "refresh_token",
            "expires_in",
            "scope",
            "name",
            "orcid",
        ]
        assert body["access_token"] != first["access_token"]
        assert body["refresh_token"] != first["refresh_token"]
        assert (body["scope"], body["orcid"], body["expires_in"]) == (
            "/read-limited",
            QUALIFIED,
            631138518,
        )
        assert reads(client, body["access_token"]) == 200
        assert reads(client, first["access_token"]) == 200

    def test_revoke_old_ends_the_old_pair(self, client):
        first = code_token(client)
        body = refresh(client, first["refresh_token"], revoke_old="true").get_json()
        assert reads(client, first["access_token"]) == 401
        assert reads(client, body["access_token"]) == 200
        assert refresh(client, first["refresh_token"]).status_code == 400

    def test_scope_may_narrow_and_expires_in_shorten(self, client):
        first = code_token(client, scope="/authenticate /read-limited")
        body = refresh(
            client, first["refresh_token"], scope="/authenticate", expires_in="86400"
        ).get_json()
        assert (body["scope"], body["expires_in"]) == ("/authenticate", 86400)

    @pytest.mark.parametrize(
        "extra, error",
        [
            ({"scope": "/activities/update"}, "invalid_scope"),
            ({"expires_in": "forever"}, "invalid_request"),
            ({"expires_in": "0"}, "invalid_request"),
        ],
        ids=["wider-scope", "bad-expires-in", "zero-expires-in"],
    )
    def test_a_bad_refresh_request_answers_400(self, client, extra, error):
        first = code_token(client)
        response = refresh(client, first["refresh_token"], **extra)
        assert response.status_code == 400
        assert response.get_json()["error"] == error

    def test_an_unknown_or_other_clients_refresh_token_is_invalid_grant(self, client):
        unknown = refresh(client, "00000000-0000-4000-8000-000000000000")
        assert unknown.status_code == 400
        assert unknown.get_json()["error"] == "invalid_grant"
        assert "00000000-0000-4000-8000-000000000000" not in unknown.get_data(as_text=True)
        first = code_token(client)
        other = refresh(client, first["refresh_token"], client_id=PUBLIC_CLIENT_ID)
        assert other.get_json()["error"] == "invalid_grant"

    def test_a_client_credentials_token_refreshes_without_a_researcher(self, client):
        form = {
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
            "grant_type": "client_credentials",
            "scope": "/read-public",
        }
        first = client.post("/oauth/token", data=form).get_json()
        body = refresh(client, first["refresh_token"]).get_json()
        assert body["orcid"] is None and "name" not in body


class TestRedirectUriOption:
    INTEGRATOR = "https://app.example.test/orcid/callback"

    def test_a_given_redirect_uri_is_accepted_for_every_client(self, signing_key):
        from app.emulator import create_app

        app = create_app(signing_key=signing_key, redirect_uris=[self.INTEGRATOR])
        client = app.test_client()
        params = authorize_params(
            client_id="APP-GATEKEEPERDEMO01", redirect_uri=self.INTEGRATOR, decision="deny"
        )
        response = client.get("/oauth/authorize", query_string=params)
        assert response.status_code == 302
        assert response.headers["Location"].startswith(self.INTEGRATOR + "?")
        # The registered ones still work; others still do not.
        params["redirect_uri"] = "http://127.0.0.1:8000/callback"
        assert client.get("/oauth/authorize", query_string=params).status_code == 302
        params["redirect_uri"] = "https://app.example.test/other"
        assert client.get("/oauth/authorize", query_string=params).status_code == 400

    def test_without_the_option_the_uri_is_refused(self, signing_key):
        from app.emulator import create_app

        client = create_app(signing_key=signing_key).test_client()
        params = authorize_params(
            client_id="APP-GATEKEEPERDEMO01", redirect_uri=self.INTEGRATOR, decision="deny"
        )
        assert client.get("/oauth/authorize", query_string=params).status_code == 400

    @pytest.mark.parametrize(
        "uri", ["ftp://app.example.test/cb", "/callback", "https://app.example.test/cb#x"]
    )
    def test_a_bad_redirect_uri_is_a_fixture_error(self, uri):
        from app.emulator import create_app
        from app.emulator.personas import FixtureError

        with pytest.raises(FixtureError, match="--redirect-uri"):
            create_app(redirect_uris=[uri])
