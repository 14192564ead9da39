"""gunicorn's access log never holds an OAuth code or state, whatever the log format."""

from __future__ import annotations

import http.client
import json
import re
from urllib.parse import parse_qs, urlsplit

import requests

from tests.integration.conftest import sign_in
from tests.integration.test_access_tokens import make_token

# Every atom gunicorn offers that can carry a URL: the request line, path, query,
# referer, and the headers and environ keys a proxy or a redirect fills with a URL.
EVERY_URL_ATOM = (
    '"%(r)s" %(U)s q=%(q)s f=%(f)s ref=%({referer}i)s loc=%({location}o)s '
    "orig=%({x-original-uri}i)s raw=%({raw_uri}e)s qs=%({query_string}e)s %(s)s"
)


def walk_sign_in(base_url: str) -> tuple[requests.Session, str]:
    """Sign in through the emulator, returning the browser and the callback URL it used."""
    browser = requests.Session()
    login = browser.get(
        f"{base_url}/login", params={"next": "/datasets/sail-cohort"}, allow_redirects=False
    )
    consent = browser.get(
        login.headers["Location"],
        params={"persona": "qualified", "decision": "authorize"},
        allow_redirects=False,
        timeout=10,
    )
    callback = consent.headers["Location"]
    answer = browser.get(callback, allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    assert answer.headers["Location"].endswith("/datasets/sail-cohort")
    return browser, callback


def access_entries(gatekeeper) -> list[dict]:
    """The access lines gunicorn wrote, each one JSON object."""
    gatekeeper.stop()  # flushes and closes the log
    with open(gatekeeper.log.name) as log:
        entries = [json.loads(line) for line in log if line.startswith("{")]
    return [entry for entry in entries if entry["logger"] == "gunicorn.access"]


def access_lines(gatekeeper) -> list[str]:
    """Each access line as its text: the message, or the whole JSON object."""
    entries = access_entries(gatekeeper)
    return [e["message"] if e["message"] != "request" else json.dumps(e) for e in entries]


def get_raw(base_url: str, target: str) -> int:
    """GET ``target`` exactly as written (requests would decode %63 to c)."""
    connection = http.client.HTTPConnection(urlsplit(base_url).netloc, timeout=10)
    try:
        connection.request("GET", target)
        return connection.getresponse().status
    finally:
        connection.close()


class TestAccessLog:
    def test_sign_in_logs_callback_without_code_or_state(self, start_gatekeeper, orcid):
        gatekeeper = start_gatekeeper(
            workers=1, GUNICORN_ACCESSLOG="-", GUNICORN_ACCESS_LOG_FORMAT=EVERY_URL_ATOM
        )
        browser, callback = walk_sign_in(gatekeeper.url)
        query = parse_qs(urlsplit(callback).query)
        code, state = query["code"][0], query["state"][0]
        # The same code and state again, spelled so that they still reach the callback,
        # and sent as the Referer of the next page, as an old browser would.
        assert get_raw(gatekeeper.url, f"/%63allback?code={code}&state={state}") == 400
        browser.get(f"{gatekeeper.url}/", headers={"Referer": callback})

        lines = access_lines(gatekeeper)

        assert any('"GET /callback HTTP/1.1"' in line for line in lines), lines
        assert any('"GET /%63allback HTTP/1.1"' in line for line in lines), lines
        for line in lines:
            assert code not in line and state not in line, line
            assert "code=" not in line and "state=" not in line, line

    def test_no_credential_reaches_a_text_line(self, start_gatekeeper, orcid):
        # gunicorn's own default format has %(u)s, the Basic user name: `curl -u TOKEN:`.
        credentials = (
            "u=%(u)s a=%({authorization}i)s c=%({cookie}i)s sc=%({set-cookie}o)s "
            "ea=%({http_authorization}e)s ec=%({http_cookie}e)s %(s)s"
        )
        gatekeeper = start_gatekeeper(
            workers=1, GUNICORN_ACCESSLOG="-", GUNICORN_ACCESS_LOG_FORMAT=credentials
        )
        browser, _ = sign_in(gatekeeper.url, "qualified")
        token = make_token(gatekeeper.url, browser)
        target = {"X-Original-URI": "/datasets/sail-cohort/f.csv"}
        assert requests.get(f"{gatekeeper.url}/auth", auth=(token, ""), headers=target).ok
        bearer = {"Authorization": f"Bearer {token}", **target}
        assert requests.get(f"{gatekeeper.url}/auth", headers=bearer).ok
        assert browser.get(f"{gatekeeper.url}/auth", headers=target).ok
        cookie = browser.cookies["gatekeeper_session"]

        lines = access_lines(gatekeeper)

        assert len(lines) >= 3 and all(" 200" in line or " 30" in line for line in lines[-3:])
        for line in lines:
            assert token not in line and cookie not in line, line
            assert "Bearer" not in line and "Basic" not in line, line
            assert "gkpat_" not in line and "gatekeeper_session" not in line, line

    def test_the_default_line_is_json_with_named_fields_and_no_query(self, start_gatekeeper, orcid):
        gatekeeper = start_gatekeeper(workers=1, GUNICORN_ACCESSLOG="-")
        browser, response = sign_in(gatekeeper.url, "qualified", next_path="/datasets/sail-cohort")
        assert response.status_code == 302
        page = browser.get(
            f"{gatekeeper.url}/datasets/sail-cohort", headers={"X-Request-Id": "req-42"}
        )
        assert page.headers["X-Request-Id"] == "req-42"
        check = browser.get(
            f"{gatekeeper.url}/auth", headers={"X-Original-URI": "/datasets/sail-cohort/f.csv"}
        )
        assert check.status_code == 200

        entries = access_entries(gatekeeper)

        by_path = {(e["method"], e["path"]): e for e in entries}
        assert by_path[("GET", "/login")]["status"] == 302
        assert by_path[("GET", "/callback")]["status"] == 302
        dataset_page = by_path[("GET", "/datasets/sail-cohort")]
        assert dataset_page["request_id"] == "req-42"
        assert re.fullmatch(r"\d{4}-\d{4}-\d{4}-\d{3}[\dX]", dataset_page["orcid"])
        assert dataset_page["dataset"] == "sail-cohort"
        assert all(isinstance(e["duration_ms"], float) and e["request_id"] for e in entries)
        assert not any("?" in json.dumps(e) for e in entries), entries

    def test_without_gunicorn_accesslog_no_access_line_is_written(self, start_gatekeeper, orcid):
        gatekeeper = start_gatekeeper(workers=1)
        browser, response = sign_in(gatekeeper.url, "qualified")
        assert response.status_code == 302
        for _ in range(3):
            check = browser.get(
                f"{gatekeeper.url}/auth", headers={"X-Original-URI": "/datasets/sail-cohort/f"}
            )
            assert check.status_code == 200
        assert access_entries(gatekeeper) == []
