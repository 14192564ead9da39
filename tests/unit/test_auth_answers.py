"""What /auth answers a proxy: the refusal a browser reads, the plain one for scripts, timing."""

from __future__ import annotations

import re
import secrets
import time

import pytest

from app import create_app, metrics
from app.cache import session_record
from app.saved_record import SavedRecord
from app.settings import Settings

RESEARCHER = "0000-0002-1825-0097"
SAIL_FILE = "/datasets/sail-cohort/a.csv"
# What Chromium sends for a link followed to a file, and what curl sends.
BROWSER_ACCEPT = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
)
CURL_ACCEPT = "*/*"
HOSTILE_TITLE = """Cohort <script>alert(1)</script> & "friends" 'too'"""
HOSTILE_POLICY = f"""
version: 1
qualifications:
  training:
    title: Safe Researcher Training
    sources: [self-asserted]
datasets:
  cohort:
    title: '{HOSTILE_TITLE.replace("'", "''")}'
    paths: [/datasets/cohort/]
    require: [training]
"""


def make_app(**env):
    settings = Settings.from_env(
        {
            "SECRET_KEY": "unit-test-secret-key-0123",
            "ORCID_CLIENT_ID": "APP-ABCDEFGHIJKLMNOP",
            "ORCID_CLIENT_SECRET": "secret",
            **env,
        }
    )
    # A record with no qualifications: every dataset refuses.
    return create_app(settings, orcid_reader=SavedRecord({"qualifications": {}}))


def signed_in(app):
    """A test client holding a session the store knows, as after a sign-in."""
    sid = secrets.token_urlsafe(16)
    gk = app.extensions["gatekeeper"]
    assert gk.store.put_session(sid, session_record(RESEARCHER, None), 3600)
    cookie = app.session_interface.get_signing_serializer(app).dumps(
        {"researcher": {"orcid": RESEARCHER, "name": "Josiah", "sid": sid, "amr": []}}
    )
    client = app.test_client()
    client.set_cookie("gatekeeper_session", cookie)
    return client


def check(client, uri=SAIL_FILE, accept=BROWSER_ACCEPT):
    return client.get("/auth", headers={"X-Original-URI": uri, "Accept": accept})


@pytest.fixture
def app():
    return make_app(PUBLIC_URL="https://data.example.org/")


class TestRefusal:
    def test_a_browser_is_refused_with_a_link_to_the_explanation(self, app):
        response = check(signed_in(app))
        assert response.status_code == 403
        assert response.mimetype == "text/html"
        assert response.headers["X-Auth-Request-Dataset"] == "sail-cohort"
        assert response.headers["Cache-Control"] == "no-store"
        body = response.get_data(as_text=True)
        assert "No access to SAIL cohort extract yet" in body
        # Under PUBLIC_URL, trailing slash and all, so it works behind any proxy path.
        links = re.findall(r'href="([^"]+)"', body)
        assert "https://data.example.org/datasets/sail-cohort" in links
        assert "https://data.example.org/static/style.css" in links
        assert int(response.headers["Content-Length"]) == len(response.get_data())

    def test_the_page_carries_the_security_headers_of_the_other_pages(self, app):
        page = app.test_client().get("/datasets/sail-cohort")
        response = check(signed_in(app))
        for name in (
            "Content-Security-Policy",
            "X-Content-Type-Options",
            "X-Frame-Options",
            "Referrer-Policy",
        ):
            assert response.headers[name] == page.headers[name], name
        assert "script-src" not in response.headers["Content-Security-Policy"]
        body = response.get_data(as_text=True)
        assert "<script" not in body and not re.search(r"<[^>]*\s(on\w+|style)=", body)

    def test_the_dataset_title_is_escaped(self, write_policy):
        app = make_app(POLICY_PATH=str(write_policy(HOSTILE_POLICY)))
        response = check(signed_in(app), "/datasets/cohort/f")
        assert response.status_code == 403
        body = response.get_data(as_text=True)
        assert HOSTILE_TITLE not in body and "<script>" not in body
        assert "Cohort &lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;friends&quot;" in body
        assert 'href="/datasets/cohort"' in body  # no PUBLIC_URL: a path on this host

    @pytest.mark.parametrize(
        "accept",
        [CURL_ACCEPT, "application/json", "text/html;q=0", ""],
        ids=["curl", "json", "html-refused", "none"],
    )
    def test_a_client_that_does_not_ask_for_html_gets_the_plain_403(self, app, accept):
        response = check(signed_in(app), accept=accept)
        assert response.status_code == 403
        assert response.mimetype == "text/plain"
        assert response.get_data(as_text=True) == "403 Forbidden"
        assert "X-Auth-Request-Dataset" not in response.headers

    def test_a_url_no_dataset_owns_is_a_plain_403_even_for_a_browser(self, app):
        response = check(signed_in(app), "/elsewhere/f")
        assert response.status_code == 403
        assert response.mimetype == "text/plain"
        assert "X-Auth-Request-Dataset" not in response.headers

    def test_without_a_session_a_browser_still_gets_401(self, app):
        response = check(app.test_client())
        assert response.status_code == 401
        assert response.mimetype == "text/plain"


def latency_count() -> float:
    [family] = metrics.AUTH_LATENCY.collect()
    return next(s.value for s in family.samples if s.name.endswith("_count"))


class TestLatencyHistogram:
    def test_every_answer_is_observed_once(self, app):
        browser, stranger = signed_in(app), app.test_client()
        before = latency_count()
        answers = [
            check(browser).status_code,  # refused, with the page (a decision is made)
            check(browser).status_code,  # refused, from the worker's memory
            check(browser, accept=CURL_ACCEPT).status_code,
            check(browser, "/elsewhere/f").status_code,
            check(stranger).status_code,
            stranger.get("/auth?redirect=1", headers={"X-Original-URI": SAIL_FILE}).status_code,
            stranger.get("/auth/datasets/sail-cohort/a.csv").status_code,
        ]
        assert answers == [403, 403, 403, 403, 401, 302, 401]
        assert latency_count() == before + len(answers)

    def test_pages_are_not_observed(self, app):
        client = app.test_client()
        before = latency_count()
        assert client.get("/").status_code == 200
        assert client.get("/healthz").status_code == 200
        assert latency_count() == before


class TestAnswerCacheHeader:
    """``X-Accel-Expires``: how long nginx's auth cache may serve an answer (at most the
    rest of the second in which the answer was last confirmed against the store)."""

    def test_a_decisions_answer_may_be_cached_until_the_end_of_this_second(self, app):
        browser = signed_in(app)
        for accept in (BROWSER_ACCEPT, CURL_ACCEPT):
            before = int(time.time())
            response = check(browser, accept=accept)
            assert response.status_code == 403
            expires = response.headers["X-Accel-Expires"]
            assert expires.startswith("@") and before <= int(expires[1:]) <= int(time.time())

    @pytest.mark.parametrize("uri", [SAIL_FILE, "/elsewhere/f"], ids=["signed-out", "no-dataset"])
    def test_other_answers_are_never_cached(self, app, uri):
        client = app.test_client() if uri == SAIL_FILE else signed_in(app)
        response = check(client, uri)
        assert response.status_code in (401, 403)
        assert response.headers["X-Accel-Expires"] == "0"

    @pytest.mark.parametrize(
        "fraction, asks", [(0.95, False), (0.5, True)], ids=["same-second", "second-before"]
    )
    def test_an_answer_confirmed_in_the_second_before_is_checked_again_first(
        self, app, monkeypatch, fraction, asks
    ):
        """A remembered answer confirmed 0.9 s ago: served from memory while that was in
        the current second, else confirmed against the store again; either way nginx
        may keep it to the end of the current second, and no longer."""
        browser = signed_in(app)
        check(browser)  # decided and remembered
        middleware = app.wsgi_app
        answers = middleware.answers
        [key] = list(answers._entries)
        allowed, until, _ = answers.get(key)
        answers.put(key, (allowed, until, time.monotonic() - 0.9), 0)
        lookups = []
        real_lookup = middleware.store.lookup
        monkeypatch.setattr(
            middleware.store, "lookup", lambda *a: lookups.append(a) or real_lookup(*a)
        )
        now = int(time.time()) + 5 + fraction
        monkeypatch.setattr(time, "time", lambda: now)
        response = check(browser)
        assert response.status_code == 403
        assert response.headers["X-Accel-Expires"] == f"@{int(now)}"
        assert bool(lookups) is asks

    @pytest.mark.parametrize("fraction", [0.2, 0.7])
    def test_a_cached_copy_never_outlives_the_decision(self, app, monkeypatch, fraction):
        """The decision lapses half a second from now: nginx may keep the answer only to
        the end of a second that ends by then."""
        browser = signed_in(app)
        check(browser)
        answers = app.wsgi_app.answers
        [key] = list(answers._entries)
        now = int(time.time()) + 5 + fraction
        allowed, _until, _checked = answers.get(key)
        answers.put(key, (allowed, now + 0.5, time.monotonic()), 0)
        monkeypatch.setattr(time, "time", lambda: now)
        response = check(browser)
        assert response.status_code == 403
        expires = response.headers["X-Accel-Expires"]
        if fraction < 0.5:
            assert expires == "0"  # this second ends after the decision lapses
        else:
            assert expires == f"@{int(now)}" and int(now) + 1 <= now + 0.5

    def test_once_the_policy_files_change_no_answer_is_cached(self, write_policy, monkeypatch):
        path = write_policy(HOSTILE_POLICY)
        app = make_app(POLICY_PATH=str(path))
        browser = signed_in(app)
        assert check(browser, "/datasets/cohort/f").headers["X-Accel-Expires"].startswith("@")
        path.write_text(path.read_text() + "\n# edited\n")
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + 1.0)  # the next second: it looks
        response = check(browser, "/datasets/cohort/f")
        assert response.status_code == 403
        assert response.headers["X-Accel-Expires"] == "0"
