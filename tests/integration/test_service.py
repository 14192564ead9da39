"""The service end to end under gunicorn: sign-in at the ORCID emulator, pages, /auth."""

import concurrent.futures
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.integration.conftest import BIN, REPO, free_port, gatekeeper_env, raw_get, sign_in

QUALIFIED = "qualified"
SELF_ASSERTED = "self-asserted"


@pytest.fixture
def gatekeeper(start_gatekeeper, redis_url, orcid):
    return start_gatekeeper(redis_url=redis_url)


def auth(browser_or_requests, gatekeeper, **headers):
    return browser_or_requests.get(
        f"{gatekeeper.url}/auth", headers=headers, allow_redirects=False, timeout=15
    )


class TestSignIn:
    def test_sign_in_sets_a_hardened_cookie_and_returns_to_next(self, gatekeeper):
        _browser, response = sign_in(gatekeeper.url, QUALIFIED, "/datasets/sail-cohort")
        assert response.status_code == 302
        assert response.headers["Location"] == "/datasets/sail-cohort"
        cookie = response.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
        assert "Secure" not in cookie  # plain http on loopback only

    @pytest.mark.parametrize(
        "hostile",
        ["https://evil.example/", "//evil.example", "/\\evil.example", "javascript:alert(1)"],
    )
    def test_hostile_next_falls_back_to_home(self, gatekeeper, hostile):
        _, response = sign_in(gatekeeper.url, QUALIFIED, hostile)
        assert response.headers["Location"] == "/"

    def test_denied_consent_shows_a_friendly_page_and_no_session(self, gatekeeper):
        browser, response = sign_in(gatekeeper.url, QUALIFIED, decision="deny")
        assert response.status_code == 200
        assert "You did not give permission" in response.text
        assert (
            auth(browser, gatekeeper, **{"X-Original-URI": "/datasets/sail-cohort/a"}).status_code
            == 401
        )

    def test_a_forged_state_is_refused_with_no_session(self, gatekeeper, orcid):
        browser = requests.Session()
        browser.get(f"{gatekeeper.url}/login", allow_redirects=False, timeout=5)
        response = browser.get(
            f"{gatekeeper.url}/callback",
            params={"code": "abcdef", "state": "forged"},
            allow_redirects=False,
            timeout=5,
        )
        assert response.status_code == 400
        assert "expired or was already used" in response.text
        assert orcid.requests().get("token", 0) == 0

    def test_a_replayed_callback_is_refused(self, gatekeeper):
        browser = requests.Session()
        start = browser.get(f"{gatekeeper.url}/login", allow_redirects=False, timeout=5)
        back = browser.get(
            start.headers["Location"],
            params={"persona": QUALIFIED, "decision": "authorize"},
            allow_redirects=False,
            timeout=5,
        )
        callback = back.headers["Location"]
        assert browser.get(callback, allow_redirects=False, timeout=5).status_code == 302
        assert browser.get(callback, allow_redirects=False, timeout=5).status_code == 400

    def test_logout_needs_the_form_token_and_ends_the_session(self, gatekeeper):
        browser, _ = sign_in(gatekeeper.url, QUALIFIED)
        headers = {"X-Original-URI": "/datasets/sail-cohort/data.csv"}
        assert auth(browser, gatekeeper, **headers).status_code == 200
        stolen = dict(browser.cookies)
        assert (
            browser.post(f"{gatekeeper.url}/logout", data={"csrf": "wrong"}, timeout=5).status_code
            == 400
        )
        page = browser.get(f"{gatekeeper.url}/logout", timeout=5).text
        token = re.search(r'name="csrf" value="([^"]+)"', page)[1]
        assert (
            browser.post(f"{gatekeeper.url}/logout", data={"csrf": token}, timeout=5).status_code
            == 200
        )
        # Even the old cookie, replayed, no longer counts (within the one-second sync).
        replay = requests.Session()
        replay.cookies.update(stolen)
        time.sleep(1.1)
        assert auth(replay, gatekeeper, **headers).status_code == 401


class TestForwardAuth:
    def test_without_a_session_the_answer_is_401(self, gatekeeper):
        response = auth(requests, gatekeeper, **{"X-Original-URI": "/datasets/sail-cohort/x"})
        assert response.status_code == 401

    def test_redirect_mode_answers_302_to_login_with_the_original_url(self, gatekeeper):
        response = requests.get(
            f"{gatekeeper.url}/auth?redirect=1",
            headers={
                "X-Forwarded-Uri": "/datasets/sail-cohort/x.csv",
                "X-Forwarded-Host": "127.0.0.1:9",
                "X-Forwarded-Proto": "http",
            },
            allow_redirects=False,
            timeout=5,
        )
        assert response.status_code == 302
        assert response.headers["Location"] == (
            f"{gatekeeper.url}/login?next=http%3A%2F%2F127.0.0.1%3A9%2Fdatasets%2Fsail-cohort%2Fx.csv"
        )

    @pytest.mark.parametrize(
        "headers, path",
        [
            ({"X-Original-URI": "/datasets/sail-cohort/data.csv"}, "/auth"),
            ({"X-Forwarded-Uri": "/datasets/sail-cohort/data.csv"}, "/auth"),
            ({}, "/auth/datasets/sail-cohort/data.csv"),
            ({}, "/auth?dataset=sail-cohort"),
        ],
        ids=["nginx", "traefik-caddy", "envoy-path", "query"],
    )
    def test_a_qualified_researcher_is_allowed_with_identity_headers(
        self, gatekeeper, headers, path
    ):
        browser, _ = sign_in(gatekeeper.url, QUALIFIED)
        response = browser.get(gatekeeper.url + path, headers=headers, timeout=15)
        assert response.status_code == 200
        orcid_id = response.headers["X-Orcid-Id"]
        assert re.fullmatch(r"\d{4}-\d{4}-\d{4}-\d{3}[\dX]", orcid_id)
        assert response.headers["X-Auth-Request-User"] == orcid_id
        assert response.headers["X-Auth-Request-Dataset"] == "sail-cohort"

    def test_a_researcher_without_the_qualifications_gets_403(self, gatekeeper):
        browser, _ = sign_in(gatekeeper.url, SELF_ASSERTED)
        response = auth(browser, gatekeeper, **{"X-Original-URI": "/datasets/sail-cohort/a"})
        assert response.status_code == 403

    @pytest.mark.parametrize("uri", ["/elsewhere/file", "/datasets/unknown/x", ""])
    def test_a_url_that_maps_to_no_dataset_is_403(self, gatekeeper, uri):
        browser, _ = sign_in(gatekeeper.url, QUALIFIED)
        assert auth(browser, gatekeeper, **{"X-Original-URI": uri}).status_code == 403

    def test_a_tampered_cookie_is_no_session(self, gatekeeper):
        browser, _ = sign_in(gatekeeper.url, QUALIFIED)
        value = browser.cookies["gatekeeper_session"]
        forged = requests.Session()
        forged.cookies.set(
            "gatekeeper_session", value[:-3] + ("AAA" if value[-3:] != "AAA" else "BBB")
        )
        assert (
            auth(forged, gatekeeper, **{"X-Original-URI": "/datasets/sail-cohort/a"}).status_code
            == 401
        )

    def test_the_cached_path_reads_orcid_once(self, gatekeeper, orcid):
        browser, _ = sign_in(gatekeeper.url, QUALIFIED)
        for _ in range(20):
            assert (
                auth(
                    browser, gatekeeper, **{"X-Original-URI": "/datasets/sail-cohort/a"}
                ).status_code
                == 200
            )
        assert orcid.requests()["qualifications"] == 1

    def test_thirty_concurrent_first_requests_cost_one_summary_read(
        self, start_gatekeeper, redis_url, orcid
    ):
        gatekeeper = start_gatekeeper(redis_url=redis_url, workers=2)
        browser, _ = sign_in(gatekeeper.url, QUALIFIED)
        orcid.reset()
        orcid.faults(latency_ms=300)  # keep the first read in flight while the rest arrive
        cookies = dict(browser.cookies)

        def one(_):
            return requests.get(
                f"{gatekeeper.url}/auth?dataset=sail-cohort", cookies=cookies, timeout=20
            ).status_code

        with concurrent.futures.ThreadPoolExecutor(30) as pool:
            statuses = list(pool.map(one, range(30)))
        # More checks than a worker has cold slots: those that get none within half a
        # second are refused for that second (admission, README "bounds"), never queued
        # past the budget; the rest share the one read.
        assert set(statuses) <= {200, 403} and statuses.count(200) >= 2, statuses
        assert orcid.requests()["qualifications"] == 1
        time.sleep(1.1)  # past the worker's memory of a refusal for time
        assert one(0) == 200 and orcid.requests()["qualifications"] == 1

    def test_redis_stopped_mid_test_still_answers(self, gatekeeper, redis_server):
        browser, _ = sign_in(gatekeeper.url, QUALIFIED)
        headers = {"X-Original-URI": "/datasets/sail-cohort/a"}
        # The session's worker sees it in Redis (one kept-alive connection, one worker).
        assert auth(browser, gatekeeper, **headers).status_code == 200
        redis_server.stop()
        for path in ("/auth", "/", "/datasets/sail-cohort"):
            response = browser.get(gatekeeper.url + path, headers=headers, timeout=15)
            assert response.status_code == 200, path
        # No sign-in can start while Redis is down (its state would be kept where the
        # callback's worker may not find it): a clear page, not a 500, and not ORCID.
        newcomer = requests.Session()
        response = newcomer.get(f"{gatekeeper.url}/login", allow_redirects=False, timeout=15)
        assert response.status_code == 503
        assert "cannot sign you in just now" in response.text
        assert auth(newcomer, gatekeeper, **headers).status_code == 401

    def test_a_session_gone_from_redis_stops_counting_within_a_second(
        self, gatekeeper, redis_server
    ):
        browser, _ = sign_in(gatekeeper.url, QUALIFIED)
        headers = {"X-Original-URI": "/datasets/sail-cohort/a"}
        assert auth(browser, gatekeeper, **headers).status_code == 200
        for key in redis_server.client.scan_iter("gk:*:s:*"):  # expired, evicted, deleted
            redis_server.client.delete(key)
        time.sleep(1.1)
        assert auth(browser, gatekeeper, **headers).status_code == 401

    def test_logout_that_redis_cannot_confirm_keeps_the_cookie_and_says_so(
        self, gatekeeper, redis_server
    ):
        browser, _ = sign_in(gatekeeper.url, QUALIFIED)
        page = browser.get(f"{gatekeeper.url}/logout", timeout=5).text
        token = re.search(r'name="csrf" value="([^"]+)"', page)[1]
        redis_server.client.execute_command("CLIENT", "PAUSE", 2000, "ALL")
        response = browser.post(f"{gatekeeper.url}/logout", data={"csrf": token}, timeout=15)
        assert response.status_code == 503
        assert "could not end your session" in response.text
        assert "gatekeeper_session" in browser.cookies  # kept, so the researcher can retry

    def test_orcid_returning_503_refuses_with_the_reason_on_the_page(self, gatekeeper, orcid):
        browser, _ = sign_in(gatekeeper.url, QUALIFIED)
        orcid.faults(status=503, rate=1.0, endpoints=["qualifications"])
        response = auth(browser, gatekeeper, **{"X-Original-URI": "/datasets/sail-cohort/a"})
        assert response.status_code == 403
        page = browser.get(f"{gatekeeper.url}/datasets/sail-cohort", timeout=15)
        assert page.status_code == 200
        assert "ORCID is not answering right now" in page.text


class TestPages:
    def test_dataset_page_explains_a_refusal(self, gatekeeper):
        browser, _ = sign_in(gatekeeper.url, SELF_ASSERTED)
        page = browser.get(f"{gatekeeper.url}/datasets/sail-cohort", timeout=15)
        assert "No access yet" in page.text
        assert "added by yourself; this dataset needs it from UK Data Service" in page.text
        assert "What to do" in page.text

    def test_dataset_page_shows_access_granted(self, gatekeeper):
        browser, _ = sign_in(gatekeeper.url, QUALIFIED)
        page = browser.get(f"{gatekeeper.url}/datasets/sail-cohort", timeout=15)
        assert "Access granted" in page.text and "Safe Researcher Training" in page.text

    def test_check_again_rereads_orcid_and_is_rate_limited(self, gatekeeper, orcid):
        browser, _ = sign_in(gatekeeper.url, QUALIFIED)
        page = browser.get(f"{gatekeeper.url}/datasets/sail-cohort", timeout=15).text
        token = re.search(r'name="csrf" value="([^"]+)"', page)[1]
        before = orcid.requests()["qualifications"]
        first = browser.post(
            f"{gatekeeper.url}/check/sail-cohort",
            data={"csrf": token},
            allow_redirects=False,
            timeout=15,
        )
        assert first.status_code == 302
        assert orcid.requests()["qualifications"] == before + 1
        second = browser.post(
            f"{gatekeeper.url}/check/sail-cohort",
            data={"csrf": token},
            allow_redirects=False,
            timeout=15,
        )
        assert second.status_code == 429
        assert orcid.requests()["qualifications"] == before + 1

    def test_unknown_dataset_page_is_404_without_a_trace(self, gatekeeper):
        page = requests.get(f"{gatekeeper.url}/datasets/nope", timeout=5)
        assert page.status_code == 404 and "Traceback" not in page.text

    def test_readyz_reports_redis_down(self, gatekeeper, redis_server):
        assert requests.get(f"{gatekeeper.url}/readyz", timeout=5).status_code == 200
        redis_server.stop()
        response = requests.get(f"{gatekeeper.url}/readyz", timeout=5)
        assert response.status_code == 503 and "Redis" in response.json()["problems"][0]


def refused_start(env: dict, *arguments: str) -> list[str]:
    """Start gunicorn as the fixtures do, expecting it to refuse: exit 3, no traceback, no
    metrics directory left in its TMPDIR. Its lines starting "orcid-gatekeeper:"."""
    result = subprocess.run(
        [
            *(str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "app:create_app()"),
            *("-b", f"127.0.0.1:{free_port()}", *arguments),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 3, result.stderr[-500:]
    assert "Traceback" not in result.stderr
    assert list(Path(env["TMPDIR"]).iterdir()) == []
    return [line for line in result.stderr.splitlines() if line.startswith("orcid-gatekeeper:")]


class TestStartUp:
    @pytest.mark.parametrize(
        "unset, extra, variable",
        [
            ("SECRET_KEY", {}, "SECRET_KEY"),
            (None, {"POLICY_PATH": "/nonexistent/policies"}, "POLICY_PATH"),
            (None, {"REFUSAL_TTL": "soon"}, "REFUSAL_TTL"),
            (None, {"GUNICORN_WORKERS": "two"}, "GUNICORN_WORKERS"),
            (None, {"GUNICORN_TIMEOUT": "0"}, "GUNICORN_TIMEOUT"),
            (None, {"ORCID_SCOPE": "/read-all"}, "ORCID_SCOPE"),
            (None, {"GUNICORN_HTTP_PARSER": "quick"}, "GUNICORN_HTTP_PARSER"),
        ],
        ids=[
            "no-secret",
            "no-policy",
            "bad-number",
            "gunicorn-number",
            "gunicorn-low",
            "scope",
            "gunicorn-parser",
        ],
    )
    def test_bad_settings_stop_gunicorn_with_one_line_naming_the_variable(
        self, tmp_path, emulator, unset, extra, variable
    ):
        env = gatekeeper_env(tmp_path, emulator, **extra)
        if unset:
            env.pop(unset)
        [line] = refused_start(env)
        assert variable in line

    def test_demo_mode_under_gunicorn_says_so_and_still_needs_redis_for_workers(
        self, tmp_path, emulator
    ):
        env = gatekeeper_env(tmp_path, emulator, GATEKEEPER_DEMO="1")
        env.pop("SECRET_KEY")
        warning, refusal = refused_start(env, "-w", "2")
        assert "GATEKEEPER_DEMO is set: demo mode" in warning
        assert refusal.startswith("orcid-gatekeeper: REDIS_URL: required with 2 workers")

    @pytest.mark.parametrize(
        "arguments, setting",
        [
            ("--forwarder-headers SCRIPT_NAME,PATH_INFO", "forwarder_headers"),
            ("--header-map dangerous", "header_map"),
            ("--proxy-protocol v1", "proxy_protocol"),
            ("--protocol uwsgi", "protocol"),
            ("--logger-class gunicorn.glogging.Logger", "logger_class"),
        ],
    )
    def test_gunicorn_arguments_cannot_undo_a_pinned_setting(
        self, tmp_path, emulator, arguments, setting
    ):
        # gunicorn applies GUNICORN_CMD_ARGS after this service's configuration file.
        env = gatekeeper_env(tmp_path, emulator, GUNICORN_CMD_ARGS=arguments)
        [line] = refused_start(env, "-w", "1")
        assert line.startswith(f"orcid-gatekeeper: {setting}: ")

    def test_the_c_parser_asked_for_but_not_installed_is_one_line(self, tmp_path, emulator):
        env = gatekeeper_env(tmp_path, emulator, GUNICORN_HTTP_PARSER="fast")
        # As if gunicorn_h1c were not installed (the bench's servers extra installs it).
        hide = "import sys; sys.modules['gunicorn_h1c'] = None; import app.gunicorn_config"
        result = subprocess.run(
            [sys.executable, "-c", hide],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 3
        assert result.stderr.strip() == (
            "orcid-gatekeeper: GUNICORN_HTTP_PARSER: fast needs gunicorn_h1c: "
            "pip install gunicorn_h1c"
        )

    @pytest.mark.parametrize("value", ["", " "])
    def test_an_empty_gunicorn_bind_is_unset(self, tmp_path, emulator, value):
        # An empty bind listened on nothing, and said so only as "Listening at:  (pid)".
        env = gatekeeper_env(tmp_path, emulator, GUNICORN_BIND=value, BIND="0.0.0.0:9")
        result = subprocess.run(
            [sys.executable, "-c", "import app.gunicorn_config as c; print(c.bind)"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.stdout.strip() == "127.0.0.1:8000", result.stderr


def test_x_original_uri_sent_twice_is_refused_whichever_comes_first(gatekeeper):
    # gunicorn joins a header sent twice ("a,b"); neither URL may decide for the other.
    # The researcher may open the survey and not the SAIL extract.
    browser, _ = sign_in(gatekeeper.url, SELF_ASSERTED)
    cookie = ("Cookie", f"gatekeeper_session={browser.cookies['gatekeeper_session']}")
    survey, sail = "/datasets/survey-microdata/a.csv", "/datasets/sail-cohort/a.csv"
    relative = "../../sail-cohort/a.csv"  # after the survey's path, it climbs into SAIL

    def status(*uris):
        headers = [cookie, *(("X-Original-URI", uri) for uri in uris)]
        return raw_get(gatekeeper.port, "/auth", headers)[0]

    assert status(survey) == 200 and status(sail) == 403
    assert status(survey, sail) == 403
    assert status(sail, survey) == 403
    assert status(survey, relative) == 403


@pytest.mark.parametrize("header", ["SCRIPT_NAME", "Script_Name"])
def test_no_header_moves_a_request_onto_another_route(gatekeeper, header):
    # The proxy connects from loopback, which FORWARDED_ALLOW_IPS trusts; gunicorn would
    # take SCRIPT_NAME from such a peer's headers and cut it off the path, so a browser's
    # header passed on by the proxy could turn /static/metrics into /metrics.
    assert requests.get(f"{gatekeeper.url}/metrics", timeout=10).status_code == 200
    for path, prefix in (("/static/metrics", "/static"), ("/datasets/readyz", "/datasets")):
        response = requests.get(f"{gatekeeper.url}{path}", headers={header: prefix}, timeout=10)
        assert response.status_code == 404, (path, response.text[:200])
        assert "# HELP" not in response.text


def test_gunicorn_removes_the_metrics_directory_it_made(start_gatekeeper, tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    gatekeeper = start_gatekeeper(TMPDIR=str(scratch), workers=1)

    def made() -> list[str]:
        # Only ours: a worker's heartbeat file (wgunicorn-*) lives in TMPDIR too, for the
        # moment between mkstemp and unlink (a listing that caught one flaked this test).
        return [p.name for p in scratch.iterdir() if not p.name.startswith("wgunicorn-")]

    [directory] = made()
    assert directory.startswith("gatekeeper-metrics-")
    # Ctrl-C: gunicorn's quick shutdown. It must end by itself for on_exit to run (the
    # fixture's stop would kill a master still waiting on a hung worker after 10 s).
    gatekeeper.process.send_signal(signal.SIGINT)
    assert gatekeeper.process.wait(timeout=60) == 0
    assert made() == []


def test_an_operators_metrics_directory_starts_each_run_empty(start_gatekeeper, tmp_path):
    # prometheus_client reads every file there: the last run's master left its own.
    directory = tmp_path / "prometheus"
    directory.mkdir()
    for run in range(2):
        gatekeeper = start_gatekeeper(PROMETHEUS_MULTIPROC_DIR=str(directory), workers=1)
        text = requests.get(f"{gatekeeper.url}/metrics", timeout=10).text
        assert 'gatekeeper_policy_loads_total{result="ok"} 1.0' in text, run
        gatekeeper.stop()
    assert list(directory.glob("*.db"))  # an operator's directory is theirs to keep


def test_gunicorn_opens_no_control_socket(start_gatekeeper, tmp_path):
    # gunicorn 25.1+ would open $HOME/.gunicorn/gunicorn.ctl, one path for every instance.
    home = tmp_path / "home"
    home.mkdir()
    gatekeeper = start_gatekeeper(HOME=str(home), XDG_RUNTIME_DIR="", workers=1)
    gatekeeper.stop()
    assert list(home.iterdir()) == []
    assert "Control socket" not in Path(gatekeeper.log.name).read_text()
