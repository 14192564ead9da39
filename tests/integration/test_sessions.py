"""Sign-in state, session identity, the sign-in log and Disconnect, end to end.

The gatekeeper runs under gunicorn with a real Redis and signs in at the ORCID emulator.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flask import Flask

from tests.integration.conftest import EMULATOR_CLIENT, sign_in

QUALIFIED = "qualified"
SECRET_KEY = "integration-test-secret-key-0123456789"  # conftest.gatekeeper_env's
COOKIE = "gatekeeper_session"
MAX_PENDING = 3  # app.web.login.MAX_PENDING
DATASET_FILE = {"X-Original-URI": "/datasets/sail-cohort/data.csv"}


@pytest.fixture
def gatekeeper(start_gatekeeper, redis_url, orcid):
    return start_gatekeeper(redis_url=redis_url)


def serializer():
    app = Flask("reader")
    app.secret_key = SECRET_KEY
    return app.session_interface.get_signing_serializer(app)


def cookie_data(browser: requests.Session) -> dict:
    """The gatekeeper's session cookie, its signature checked with the gatekeeper's key."""
    return serializer().loads(browser.cookies[COOKIE])


def auth(browser, gatekeeper):
    return browser.get(
        f"{gatekeeper.url}/auth", headers=DATASET_FILE, allow_redirects=False, timeout=15
    )


def start(browser: requests.Session, base_url: str) -> str:
    """GET /login; the ORCID authorize URL it sends the browser to."""
    response = browser.get(f"{base_url}/login", allow_redirects=False, timeout=10)
    assert response.status_code == 302, response.text
    return response.headers["Location"]


def consent(authorize_url: str, persona: str = QUALIFIED) -> str:
    """The researcher clicks Authorize at ORCID; the callback URL ORCID sends them to."""
    response = requests.get(
        authorize_url,
        params={"persona": persona, "decision": "authorize"},
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code == 302, response.text
    return response.headers["Location"]


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def with_cookie(value: str) -> requests.Session:
    browser = requests.Session()
    browser.cookies.set(COOKIE, value)
    return browser


def csrf(browser: requests.Session, page_url: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', browser.get(page_url, timeout=10).text)[1]


def persona_orcid(orcid, key: str) -> str:
    personas = requests.get(f"{orcid.url}/_emulator/personas", timeout=5).json()
    return next(p["orcid"] for p in personas if p["key"] == key)


def stored_tokens(redis_server) -> list[str]:
    """The ORCID access tokens in the store's session records."""
    records = [redis_server.client.get(key) for key in redis_server.client.scan_iter("gk:*:s:*")]
    return [json.loads(r)["token"] for r in records if r]


def userinfo(orcid, token: str) -> int:
    """ORCID's answer to the token: 200 while it is live, 403 once revoked."""
    return requests.get(
        f"{orcid.url}/oauth/userinfo", headers={"Authorization": f"Bearer {token}"}, timeout=5
    ).status_code


def log_lines(gatekeeper) -> list[dict]:
    text = Path(gatekeeper.log.name).read_text()
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


class TestSignInState:
    def test_ten_logins_leave_the_pre_login_cookie_bounded(self, gatekeeper):
        browser = requests.Session()
        sizes = []
        for _ in range(10):
            start(browser, gatekeeper.url)
            sizes.append(len(browser.cookies[COOKIE]))
        markers = {k: v for k, v in cookie_data(browser).items() if k.startswith("_state_")}
        assert len(markers) == MAX_PENDING
        # The state's data (PKCE verifier, nonce, redirect URI) is server-side only.
        assert all(set(marker) == {"exp"} for marker in markers.values())
        assert max(sizes[MAX_PENDING:]) <= sizes[MAX_PENDING - 1] + 8  # exp's digits may vary
        assert sizes[-1] < 400

    def test_sign_ins_started_in_other_tabs_still_complete_while_pending(self, gatekeeper):
        browser = requests.Session()
        first, *_later = (start(browser, gatekeeper.url) for _ in range(MAX_PENDING))
        callback = consent(first)
        response = browser.get(callback, allow_redirects=False, timeout=10)
        assert response.status_code == 302, response.text
        assert auth(browser, gatekeeper).status_code == 200

    def test_the_oldest_sign_in_beyond_the_pending_limit_is_refused(self, gatekeeper, orcid):
        browser = requests.Session()
        oldest = start(browser, gatekeeper.url)
        for _ in range(MAX_PENDING):
            start(browser, gatekeeper.url)
        response = browser.get(consent(oldest), allow_redirects=False, timeout=10)
        assert response.status_code == 400
        assert "expired or was already used" in response.text
        assert orcid.requests()["token"] == 0

    def test_a_replayed_callback_with_the_pre_login_cookie_is_refused(self, gatekeeper, orcid):
        browser = requests.Session()
        callback = consent(start(browser, gatekeeper.url))
        pre_login = browser.cookies[COOKIE]
        assert browser.get(callback, allow_redirects=False, timeout=10).status_code == 302
        # The state is spent server-side: the old cookie, still carrying its marker, and
        # the same callback URL make no second session.
        replay = with_cookie(pre_login)
        response = replay.get(callback, allow_redirects=False, timeout=10)
        assert response.status_code == 400
        assert "expired or was already used" in response.text
        assert orcid.requests()["token"] == 1
        assert auth(replay, gatekeeper).status_code == 401

    def test_a_second_code_for_the_same_state_is_refused(self, gatekeeper, orcid):
        browser = requests.Session()
        authorize = start(browser, gatekeeper.url)
        first, second = consent(authorize), consent(authorize)
        assert query(first)["state"] == query(second)["state"]
        assert query(first)["code"] != query(second)["code"]
        pre_login = browser.cookies[COOKIE]
        assert browser.get(first, allow_redirects=False, timeout=10).status_code == 302
        response = with_cookie(pre_login).get(second, allow_redirects=False, timeout=10)
        assert response.status_code == 400
        assert "expired or was already used" in response.text
        assert orcid.requests()["token"] == 1  # the second code never reached ORCID


class TestPkce:
    def test_the_authorize_request_carries_an_s256_challenge(self, gatekeeper):
        params = query(start(requests.Session(), gatekeeper.url))
        assert params["code_challenge_method"] == "S256"
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", params["code_challenge"])

    @pytest.mark.parametrize(
        "verifier, status",
        [(None, 400), ("x" * 64, 400), ("stored", 200)],
        ids=["without-verifier", "wrong-verifier", "the-clients-verifier"],
    )
    def test_the_emulator_exchanges_a_code_only_with_its_verifier(
        self, gatekeeper, orcid, redis_server, verifier, status
    ):
        browser = requests.Session()
        authorize = start(browser, gatekeeper.url)
        callback = consent(authorize)
        state = json.loads(
            redis_server.client.get(f"gk:oauth:_state_orcid_{query(callback)['state']}")
        )
        form = {
            "client_id": EMULATOR_CLIENT["client_id"],
            "client_secret": EMULATOR_CLIENT["client_secret"],
            "grant_type": "authorization_code",
            "code": query(callback)["code"],
            "redirect_uri": query(authorize)["redirect_uri"],
        }
        if verifier == "stored":
            form["code_verifier"] = state["data"]["code_verifier"]
        elif verifier is not None:
            form["code_verifier"] = verifier
        response = requests.post(f"{orcid.url}/oauth/token", data=form, timeout=5)
        assert response.status_code == status, response.text
        if status == 400:
            assert response.json()["error"] == "invalid_grant"


class TestSessionIdentity:
    def test_a_cookie_naming_another_id_than_its_session_is_no_session(self, gatekeeper, orcid):
        browser, _ = sign_in(gatekeeper.url, QUALIFIED)
        data = cookie_data(browser)
        other = persona_orcid(orcid, "self-asserted")
        assert data["researcher"]["orcid"] != other
        forged = with_cookie(
            serializer().dumps({**data, "researcher": {**data["researcher"], "orcid": other}})
        )
        # The real cookie first, so /auth's worker memory holds this session's answer.
        assert auth(browser, gatekeeper).status_code == 200
        assert auth(forged, gatekeeper).status_code == 401
        page = forged.get(f"{gatekeeper.url}/", timeout=10).text
        assert other not in page and "Signed in as" not in page
        assert "Signed in as" in browser.get(f"{gatekeeper.url}/", timeout=10).text


class TestSignInLogAndMetrics:
    def test_sign_in_and_sign_out_are_one_log_line_each_without_secrets(
        self, gatekeeper, redis_server
    ):
        browser = requests.Session()
        callback = consent(start(browser, gatekeeper.url))
        assert browser.get(callback, allow_redirects=False, timeout=10).status_code == 302
        token = stored_tokens(redis_server)[0]
        cookie = browser.cookies[COOKIE]
        orcid_id = cookie_data(browser)["researcher"]["orcid"]
        form = {"csrf": csrf(browser, f"{gatekeeper.url}/logout")}
        assert browser.post(f"{gatekeeper.url}/logout", data=form, timeout=10).status_code == 200
        lines = log_lines(gatekeeper)
        sign_ins = [line for line in lines if line.get("event") == "sign_in"]
        sign_outs = [line for line in lines if line.get("event") == "sign_out"]
        assert [(s["outcome"], s["orcid"]) for s in sign_ins] == [("ok", orcid_id)]
        assert [s["orcid"] for s in sign_outs] == [orcid_id]
        text = Path(gatekeeper.log.name).read_text()
        for secret in (token, query(callback)["code"], query(callback)["state"], cookie):
            assert secret not in text

    def test_sign_in_outcomes_are_counted(self, gatekeeper):
        sign_in(gatekeeper.url, QUALIFIED)
        sign_in(gatekeeper.url, QUALIFIED, decision="deny")
        browser = requests.Session()
        start(browser, gatekeeper.url)
        browser.get(f"{gatekeeper.url}/callback?code=abcdef&state=forged", timeout=10)
        metrics = requests.get(f"{gatekeeper.url}/metrics", timeout=10).text
        counts = dict(
            re.findall(r'^gatekeeper_sign_ins_total\{outcome="(\w+)"\} (\S+)$', metrics, re.M)
        )
        assert counts == {"ok": "1.0", "denied": "1.0", "failed": "1.0"}
        reasons = [
            line.get("reason") for line in log_lines(gatekeeper) if line.get("event") == "sign_in"
        ]
        assert sorted(filter(None, reasons)) == ["access_denied", "mismatching_state"]


class TestHosts:
    def test_a_callback_on_another_host_says_where_to_sign_in(self, start_gatekeeper, redis_url):
        gatekeeper = start_gatekeeper(redis_url=redis_url)  # PUBLIC_URL is 127.0.0.1's
        at_localhost = f"http://localhost:{gatekeeper.port}"
        browser = requests.Session()
        callback = consent(start(browser, at_localhost))
        assert callback.startswith(f"{gatekeeper.url}/callback?")
        response = browser.get(callback, allow_redirects=False, timeout=10)
        assert response.status_code == 400
        assert (
            f"You started signing in at {at_localhost} but came back at {gatekeeper.url}; "
            f"open {gatekeeper.url} and sign in again."
        ) in response.text
        assert "expired" not in response.text


class TestDisconnect:
    def test_the_page_explains_what_is_deleted_and_asks_for_a_form_post(self, gatekeeper):
        browser, _ = sign_in(gatekeeper.url, QUALIFIED)
        page = browser.get(f"{gatekeeper.url}/disconnect", timeout=10)
        assert page.status_code == 200
        assert "every session you have with us" in page.text
        assert "ORCID access token" in page.text
        assert re.search(r'<form method="post" action="/disconnect">', page.text)
        assert "<script" not in page.text

    def test_disconnect_ends_every_session_revokes_tokens_and_forgets_decisions(
        self, gatekeeper, orcid, redis_server
    ):
        here, _ = sign_in(gatekeeper.url, QUALIFIED)
        elsewhere, _ = sign_in(gatekeeper.url, QUALIFIED)
        assert auth(here, gatekeeper).status_code == auth(elsewhere, gatekeeper).status_code == 200
        orcid_id = cookie_data(here)["researcher"]["orcid"]
        tokens = stored_tokens(redis_server)
        assert len(tokens) == 2 and all(userinfo(orcid, t) == 200 for t in tokens)
        assert list(redis_server.client.scan_iter(f"gk:{{{orcid_id}}}:d:*"))
        form = {"csrf": csrf(here, f"{gatekeeper.url}/disconnect")}
        response = here.post(f"{gatekeeper.url}/disconnect", data=form, timeout=20)
        assert response.status_code == 200
        assert "ORCID has revoked our access" in response.text
        assert COOKIE not in here.cookies
        assert list(redis_server.client.scan_iter("gk:*:s:*")) == []
        assert list(redis_server.client.scan_iter("gk:*:si")) == []
        assert list(redis_server.client.scan_iter(f"gk:{{{orcid_id}}}:d*")) == []  # and di
        assert [userinfo(orcid, t) for t in tokens] == [403, 403]
        assert orcid.requests()["revoke"] == 2
        time.sleep(1.1)  # /auth's worker memory re-checks the store after a second
        assert auth(elsewhere, gatekeeper).status_code == 401

    def test_disconnect_leaves_other_researchers_signed_in(self, gatekeeper):
        leaving, _ = sign_in(gatekeeper.url, QUALIFIED)
        staying, _ = sign_in(gatekeeper.url, "self-issued")
        form = {"csrf": csrf(leaving, f"{gatekeeper.url}/disconnect")}
        assert leaving.post(f"{gatekeeper.url}/disconnect", data=form, timeout=20).ok
        page = staying.get(f"{gatekeeper.url}/", timeout=10).text
        assert "Signed in as" in page

    def test_disconnect_needs_the_form_token(self, gatekeeper, orcid):
        browser, _ = sign_in(gatekeeper.url, QUALIFIED)
        response = browser.post(f"{gatekeeper.url}/disconnect", data={"csrf": "x"}, timeout=10)
        assert response.status_code == 400
        assert auth(browser, gatekeeper).status_code == 200
        assert orcid.requests()["revoke"] == 0

    def test_signed_out_there_is_nothing_to_disconnect(self, gatekeeper, orcid):
        browser = requests.Session()
        page = browser.get(f"{gatekeeper.url}/disconnect", timeout=10).text
        assert "Sign in" in page and "<form" not in page
        form = {"csrf": csrf(browser, f"{gatekeeper.url}/logout")}  # a form token, signed out
        response = browser.post(f"{gatekeeper.url}/disconnect", data=form, timeout=10)
        assert response.status_code == 401
        assert "Please sign in first" in response.text
        assert orcid.requests()["revoke"] == 0

    def test_with_orcid_down_ours_is_deleted_and_the_page_says_revocation_is_unconfirmed(
        self, gatekeeper, orcid, redis_server
    ):
        browser, _ = sign_in(gatekeeper.url, QUALIFIED)
        (token,) = stored_tokens(redis_server)
        orcid.faults(status=503, endpoints=["revoke"])
        form = {"csrf": csrf(browser, f"{gatekeeper.url}/disconnect")}
        response = browser.post(f"{gatekeeper.url}/disconnect", data=form, timeout=30)
        assert response.status_code == 200
        assert "ORCID did not confirm" in response.text
        assert "trusted parties" in response.text
        assert list(redis_server.client.scan_iter("gk:*:s:*")) == []
        assert userinfo(orcid, token) == 200  # still live at ORCID: we could not revoke it
        assert auth(browser, gatekeeper).status_code == 401
