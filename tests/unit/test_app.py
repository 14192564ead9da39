"""The app factory and the edges that need no ORCID: configuration, cookies, redirects."""

import logging
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

from app import create_app
from app.errors import ConfigError
from app.saved_record import SavedRecord
from app.settings import Settings

CLIENT = {"ORCID_CLIENT_ID": "APP-ABCDEFGHIJKLMNOP", "ORCID_CLIENT_SECRET": "secret"}


def make_app(**environ):
    settings = Settings.from_env({"SECRET_KEY": "unit-test-secret-key-0123", **CLIENT, **environ})
    # A reader that must never be called: these tests make no decisions.
    return create_app(settings, orcid_reader=SavedRecord({"qualifications": {}}))


RESEARCHER = "0000-0002-1825-0097"


def start_sign_in(client) -> str:
    """GET /login; the state ORCID would send back."""
    return parse_qs(urlsplit(client.get("/login").headers["Location"]).query)["state"][0]


def sign_in(client, state: str | None = None) -> str:
    """Sign in through /login and /callback with ORCID's token endpoint mocked; the sid."""
    state = state or start_sign_in(client)
    token = {"access_token": "t", "token_type": "bearer", "expires_in": 3600}
    responses.post(
        "https://orcid.org/oauth/token",
        json={**token, "scope": "/authenticate", "orcid": RESEARCHER, "name": "R"},
    )
    assert client.get(f"/callback?code=c&state={state}").status_code == 302
    cookie = client.get_cookie("gatekeeper_session").value
    serializer = client.application.session_interface.get_signing_serializer(client.application)
    return serializer.loads(cookie)["researcher"]["sid"]


class TestCreateApp:
    def test_missing_secret_key_names_the_variable(self):
        with pytest.raises(ConfigError, match="SECRET_KEY"):
            create_app(Settings.from_env(CLIENT))

    def test_a_broken_policy_names_policy_path(self, write_policy):
        path = write_policy("version: 1\ndatasets: {x: {paths: [/x/]}}\n")
        with pytest.raises(ConfigError, match=r"POLICY_PATH: .*require"):
            make_app(POLICY_PATH=str(path))


class TestLogin:
    def test_login_redirects_to_orcid_with_the_oauth_parameters(self):
        app = make_app(
            PUBLIC_URL="https://data.example.org", ORCID_BASE_URL="https://sandbox.orcid.org"
        )
        response = app.test_client().get("/login?next=/datasets/sail-cohort")
        assert response.status_code == 302
        location = response.headers["Location"]
        assert location.startswith("https://sandbox.orcid.org/oauth/authorize?")
        for part in (
            "response_type=code",
            "client_id=APP-ABCDEFGHIJKLMNOP",
            "scope=%2Fauthenticate",
            "state=",
            "redirect_uri=https%3A%2F%2Fdata.example.org%2Fcallback",
        ):
            assert part in location

    @pytest.mark.parametrize(
        "host, back_to",
        [
            ("127.0.0.1:8000", "http://127.0.0.1:8000/callback"),
            ("localhost:8000", "http://localhost:8000/callback"),
            ("attacker.example", "http://data.example.org/callback"),
        ],
    )
    def test_demo_mode_comes_back_to_a_loopback_name_only(self, host, back_to):
        # The demo follows the loopback name it was opened with; a Host header naming
        # anything else gets PUBLIC_URL's callback, never its own.
        app = make_app(PUBLIC_URL="http://data.example.org", GATEKEEPER_DEMO="1")
        location = app.test_client().get("/login", headers={"Host": host}).headers["Location"]
        assert parse_qs(urlsplit(location).query)["redirect_uri"] == [back_to]

    def test_the_session_cookie_is_signed_httponly_secure_and_lax(self):
        app = make_app(PUBLIC_URL="https://data.example.org")
        cookie = app.test_client().get("/login").headers["Set-Cookie"]
        assert cookie.startswith("gatekeeper_session=")
        assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=Lax" in cookie

    @pytest.mark.parametrize(
        "error, logged",
        [
            ("access_denied", "access_denied"),
            ("invalid_scope", "invalid_scope"),
            ("you were hacked, call 555-0100", "unknown_error"),
        ],
    )
    def test_a_callback_error_is_logged_only_as_a_known_code(self, caplog, error, logged):
        # Anyone can write the callback's query: only OAuth's own codes reach the log.
        client = make_app().test_client()
        state = start_sign_in(client)
        caplog.set_level(logging.INFO, logger="app.web.login")
        client.get("/callback", query_string={"error": error, "state": state})
        [stopped] = [r for r in caplog.records if getattr(r, "event", None) == "sign_in"]
        assert stopped.reason == logged

    def test_callback_without_state_is_refused(self):
        response = make_app().test_client().get("/callback?code=abcdef")
        assert response.status_code == 400
        assert "expired or was already used" in response.get_data(as_text=True)

    @pytest.mark.parametrize(
        "answer",
        [
            {"body": "<html>Down for maintenance</html>", "content_type": "text/html"},
            {"json": []},
            {"json": {"access_token": "a", "token_type": "bearer", "expires_in": "soon"}},
            {
                "body": '{"access_token": "a", "token_type": "bearer", "expires_in": 1e400}',
                "content_type": "application/json",
            },
            {"json": {"access_token": ["a"], "token_type": "bearer", "orcid": RESEARCHER}},
            # Not followed: a redirect would post the client secret wherever it points.
            {"status": 307, "headers": {"Location": "https://elsewhere.example/token"}},
        ],
        ids=[
            "html-page",
            "json-list",
            "expires-in-not-a-number",
            "expires-in-past-any-clock",
            "access-token-a-list",
            "redirect",
        ],
    )
    @responses.activate
    def test_a_token_answer_that_is_no_token_is_a_502_page(self, answer):
        responses.post("https://orcid.org/oauth/token", **{"status": 200, **answer})
        responses.post("https://elsewhere.example/token", json={"access_token": "stolen"})
        client = make_app().test_client()
        state = parse_qs(urlsplit(client.get("/login").headers["Location"]).query)["state"][0]
        response = client.get(f"/callback?code=c&state={state}")
        assert response.status_code == 502
        assert "could not read" in response.get_data(as_text=True)
        assert "signed in as" not in response.get_data(as_text=True).lower()
        assert not any("elsewhere" in call.request.url for call in responses.calls)

    @pytest.mark.parametrize(
        "answer",
        [
            {"body": "<html>Down for maintenance</html>", "content_type": "text/html"},
            {"json": ["not", "a", "document"]},
            {"body": requests.ConnectionError("refused")},
        ],
        ids=["html-page", "json-list", "unreachable"],
    )
    @responses.activate
    def test_a_discovery_document_that_is_none_is_a_502_page_at_login(self, answer):
        # With openid, /login reads ORCID's discovery document before sending anyone on.
        responses.get("https://orcid.org/.well-known/openid-configuration", **answer)
        response = make_app(ORCID_SCOPE="openid").test_client().get("/login")
        assert response.status_code == 502
        assert "Location" not in response.headers
        unreachable = isinstance(answer["body"], Exception) if "body" in answer else False
        title = (
            "ORCID is not answering" if unreachable else "ORCID gave an answer we could not read"
        )
        assert title in response.get_data(as_text=True)

    @pytest.mark.parametrize(
        "discovery, keys",
        [({"jwks_uri": "https://orcid.org/oauth/jwks"}, {}), ({}, None)],
        ids=["keys-no-key-set", "no-jwks-uri"],
    )
    @responses.activate
    def test_signing_keys_that_are_none_are_a_502_page_at_the_callback(self, discovery, keys):
        from joserfc import jwt
        from joserfc.jwk import RSAKey

        responses.get(
            "https://orcid.org/.well-known/openid-configuration",
            json={
                "issuer": "https://orcid.org",
                "authorization_endpoint": "https://orcid.org/oauth/authorize",
                "token_endpoint": "https://orcid.org/oauth/token",
                **discovery,
            },
        )
        if keys is not None:
            responses.get("https://orcid.org/oauth/jwks", json=keys)
        client = make_app(ORCID_SCOPE="openid").test_client()
        state = start_sign_in(client)
        id_token = jwt.encode(
            {"alg": "RS256", "kid": "k1"},
            {"iss": "https://orcid.org", "sub": RESEARCHER, "aud": CLIENT["ORCID_CLIENT_ID"]},
            RSAKey.generate_key(2048),
        )
        responses.post(
            "https://orcid.org/oauth/token",
            json={
                "access_token": "t",
                "token_type": "bearer",
                "expires_in": 3600,
                "id_token": id_token,
                "orcid": RESEARCHER,
                "scope": "openid",
            },
        )
        response = client.get(f"/callback?code=c&state={state}")
        assert response.status_code == 502
        assert "ORCID gave an answer we could not read" in response.get_data(as_text=True)

    @responses.activate
    def test_signing_in_again_ends_the_session_the_browser_had(self):
        app = make_app()
        store = app.extensions["gatekeeper"].store
        client = app.test_client()
        first = sign_in(client)
        assert store.get_session(first, RESEARCHER) is not None
        second = sign_in(client)
        assert second != first
        assert store.get_session(second, RESEARCHER) is not None
        assert store.get_session(first, RESEARCHER) is None  # a copied old cookie: signed out

    @pytest.mark.parametrize(
        "callback", ["/callback?error=access_denied&state={}", "/callback?code=c&state={}"]
    )
    @responses.activate
    def test_another_browser_cannot_spend_a_pending_sign_in(self, callback):
        app = make_app()
        researcher, other = app.test_client(), app.test_client()
        state = start_sign_in(researcher)
        other.get(callback.format(state))  # someone who learnt the state, without its cookie
        sid = sign_in(researcher, state)
        assert app.extensions["gatekeeper"].store.get_session(sid, RESEARCHER) is not None

    def test_past_the_limit_an_address_starts_no_sign_in(self):
        app = make_app(SIGN_INS_PER_MINUTE="3")
        client = app.test_client()
        for _ in range(3):
            assert client.get("/login").status_code == 302
        refused = client.get("/login")
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "60"
        assert "Location" not in refused.headers  # no state kept, nothing sent to ORCID
        elsewhere = app.test_client().get("/login", environ_base={"REMOTE_ADDR": "192.0.2.9"})
        assert elsewhere.status_code == 302

    def test_after_sign_in_public_url_is_allowed_as_an_origin_not_a_host(self):
        from app.web.login import allowed_hosts

        app = make_app(
            PUBLIC_URL="https://data.example.org", ALLOWED_REDIRECT_HOSTS="files.example.org"
        )
        with app.test_request_context("/"):
            assert allowed_hosts() == {"https://data.example.org", "files.example.org"}

    def test_callback_with_an_error_shows_the_denied_page(self):
        response = make_app().test_client().get("/callback?error=access_denied&state=x")
        assert response.status_code == 200
        assert "You did not give permission" in response.get_data(as_text=True)


class TestHostileHost:
    @pytest.mark.parametrize("host", ["a..b", "x" * 64, ".example.org"])
    def test_a_host_header_werkzeug_cannot_route_is_400_in_plain_text(self, host):
        # No URL adapter: the error page's links cannot be built, so no page, no trace.
        for path in ("/", "/login", "/datasets/sail-cohort", "/no-such-page"):
            response = make_app().test_client().get(path, headers={"Host": host})
            assert response.status_code == 400
            assert response.mimetype == "text/plain"
            assert "Bad Request" in response.get_data(as_text=True)


class TestAuthWithoutSession:
    @pytest.mark.parametrize(
        "path", ["/auth", "/auth/datasets/sail-cohort/x", "/auth?dataset=sail-cohort"]
    )
    def test_no_cookie_is_401(self, path):
        response = make_app().test_client().get(path, headers={"X-Original-URI": "/datasets/x/"})
        assert response.status_code == 401
        assert response.headers["Cache-Control"] == "no-store"

    def test_auth_redirect_setting_answers_302_to_login(self):
        app = make_app(AUTH_REDIRECT="1", PUBLIC_URL="https://data.example.org")
        response = app.test_client().get(
            "/auth", headers={"X-Original-URI": "/datasets/sail-cohort/f.csv"}
        )
        assert response.status_code == 302
        assert response.headers["Location"] == (
            "https://data.example.org/login?next=%2Fdatasets%2Fsail-cohort%2Ff.csv"
        )

    def test_garbage_cookie_is_401(self):
        client = make_app().test_client()
        client.set_cookie("gatekeeper_session", "not.a.signed.cookie")
        assert client.get("/auth?dataset=sail-cohort").status_code == 401


class TestErrors:
    def test_unknown_page_is_a_page_not_a_trace(self):
        response = make_app().test_client().get("/nope")
        assert response.status_code == 404
        assert "Traceback" not in response.get_data(as_text=True)

    def test_logout_without_csrf_is_refused(self):
        assert make_app().test_client().post("/logout").status_code == 400


def test_the_service_keeps_decisions_for_decision_log_retention_days():
    app = make_app(DECISION_LOG_RETENTION="7")
    log = app.extensions["gatekeeper"].checker.decision_log
    assert log.retention_days == 7


def test_two_apps_in_one_process_each_sign_in_at_their_own_orcid():
    sandbox = make_app(ORCID_BASE_URL="https://sandbox.orcid.org")
    production = make_app()
    for app, host in ((sandbox, "sandbox.orcid.org"), (production, "orcid.org")):
        location = app.test_client().get("/login").headers["Location"]
        assert location.startswith(f"https://{host}/oauth/authorize"), location
