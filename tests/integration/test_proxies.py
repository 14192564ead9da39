"""The configs in docs/proxies/ on the real nginx, Caddy, Traefik and Envoy, end to end.

Each proxy serves its docs config (rendered by tests/integration/proxies.py) in front of
a gatekeeper whose PUBLIC_URL is the proxy, and of a file server that records what
reaches it. A browser walks: a file asks for sign-in, sign-in goes through the proxy,
the file is served with the researcher's identity, and refusals stop at the proxy.
"""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest

from tests.integration.conftest import raw_get, sign_in
from tests.integration.proxies import PROXIES, FileServer, Sites

# Personas of the ORCID emulator (app/emulator/fixtures/personas.yaml) under policies/:
QUALIFIED = "qualified"  # may open sail-cohort
QUALIFIED_ORCID = "0009-0000-0000-0017"
SELF_ASSERTED = "self-asserted"  # refused sail-cohort, may open survey-microdata
FORGED_ORCID = "0000-0002-1825-0097"

SAIL_FILE = "/datasets/sail-cohort/hello.txt"
SAIL_CONTENT = "hello from the SAIL cohort extract\n"
SURVEY_FILE = "/datasets/survey-microdata/hello.txt"
SURVEY_CONTENT = "hello from the household survey\n"
# What Chromium sends when it follows a link to a file; requests itself sends */*.
BROWSER_ACCEPT = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    server = FileServer(tmp_path_factory.mktemp("files"))
    server.put(SAIL_FILE, SAIL_CONTENT)
    server.put("/datasets/sail-cohort/two words.txt", SAIL_CONTENT)
    server.put(SURVEY_FILE, SURVEY_CONTENT)
    server.put("/datasets/other/x", "no dataset owns this file\n")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sites(tmp_path_factory, emulator, redis_server, files):
    """Each proxy, with a gatekeeper of its own, started once for the module."""
    started = Sites(tmp_path_factory, emulator, redis_server, files)
    yield started
    started.stop()


@pytest.fixture(scope="module", params=list(PROXIES))
def site(request, sites):
    """A proxy started from its docs config, in front of a gatekeeper of its own."""
    return sites.get(request.param)


@pytest.fixture
def walk(site):
    """The site, with the file server's memory cleared for this test."""
    site.files.seen.clear()
    return site


def next_of(site, response) -> str:
    """The ``next`` of a redirect to the proxy's sign-in page."""
    assert response.status_code == 302, site.explain(response)
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{site.url}/login", (
        site.explain(response)
    )
    return parse_qs(location.query)["next"][0]


@pytest.mark.parametrize(
    "path",
    [SAIL_FILE, "/datasets/sail-cohort/two%20words.txt?part=1&of=2"],
    ids=["plain", "encoded-with-query"],
)
def test_without_a_session_a_file_redirects_to_sign_in_and_back(walk, path):
    response = walk.get(path, headers={"X-Orcid-Id": FORGED_ORCID})
    # The URL to come back to may be a path or a URL on the proxy, but it is this one.
    assert urljoin(walk.url, next_of(walk, response)) == walk.url + path
    assert walk.files.seen == []


def test_signing_in_through_the_proxy_serves_the_file_with_the_identity(walk):
    back_to = next_of(walk, walk.get(SAIL_FILE))
    browser, response = sign_in(walk.url, QUALIFIED, back_to)
    assert response.status_code == 302, walk.explain(response)
    assert urljoin(walk.url, response.headers["Location"]) == walk.url + SAIL_FILE

    response = walk.get(SAIL_FILE, browser)
    assert response.status_code == 200, walk.explain(response)
    assert response.text == SAIL_CONTENT
    [(path, headers)] = walk.files.seen
    assert path == SAIL_FILE
    assert headers.get_all("X-Orcid-Id") == [QUALIFIED_ORCID]
    assert headers.get_all("X-Auth-Request-User") == [QUALIFIED_ORCID]
    assert headers.get_all("X-Auth-Request-Dataset") == ["sail-cohort"]


def test_identity_headers_a_browser_sends_are_replaced(walk):
    browser = walk.sign_in(QUALIFIED)
    forged = {
        "X-Orcid-Id": FORGED_ORCID,
        "X-Auth-Request-User": FORGED_ORCID,
        "X-Auth-Request-Dataset": "survey-microdata",
    }
    response = walk.get(SAIL_FILE, browser, headers=forged)
    assert response.status_code == 200, walk.explain(response)
    [(_, headers)] = walk.files.seen
    assert headers.get_all("X-Orcid-Id") == [QUALIFIED_ORCID]
    assert headers.get_all("X-Auth-Request-User") == [QUALIFIED_ORCID]
    assert headers.get_all("X-Auth-Request-Dataset") == ["sail-cohort"]


def test_a_researcher_without_the_qualifications_is_refused_per_dataset(walk):
    browser = walk.sign_in(SELF_ASSERTED)
    response = walk.get(SAIL_FILE, browser)
    # A script (requests asks for */*) gets the plain 403: no page, no redirect.
    assert response.status_code == 403, walk.explain(response)
    assert "Location" not in response.headers
    assert "/datasets/sail-cohort" not in response.text
    assert walk.files.seen == []
    # The same researcher qualifies for the survey: the check is per dataset.
    response = walk.get(SURVEY_FILE, browser)
    assert response.status_code == 200, walk.explain(response)
    assert response.text == SURVEY_CONTENT


def test_a_refused_browser_is_led_to_the_explanation(walk):
    browser = walk.sign_in(SELF_ASSERTED)
    response = walk.get(SAIL_FILE, browser, headers={"Accept": BROWSER_ACCEPT})
    explanation = f"{walk.url}/datasets/sail-cohort"
    if walk.proxy.name == "nginx":
        # auth_request never shows the browser our page: the config redirects instead.
        assert response.status_code == 303, walk.explain(response)
        assert urljoin(SAIL_FILE, response.headers["Location"]) == "/datasets/sail-cohort"
    else:
        # Traefik, Caddy and Envoy hand the browser the gatekeeper's page, as it is.
        assert response.status_code == 403, walk.explain(response)
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        assert f'href="{explanation}"' in response.text, walk.explain(response)
        csp = response.headers.get("Content-Security-Policy", "")
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert response.headers.get("X-Content-Type-Options") == "nosniff"
    page = walk.get("/datasets/sail-cohort", browser, headers={"Accept": BROWSER_ACCEPT})
    assert page.status_code == 200 and "No access yet" in page.text, walk.explain(page)
    assert walk.files.seen == []


def test_a_url_no_dataset_owns_is_refused(walk):
    browser = walk.sign_in(QUALIFIED)
    response = walk.get("/datasets/other/x", browser)
    assert response.status_code == 403, walk.explain(response)
    assert walk.files.seen == []


def test_the_gatekeeper_pages_are_reachable_through_the_proxy(walk):
    for path in ("/", "/datasets/sail-cohort", "/static/style.css", "/healthz"):
        response = walk.get(path)
        assert response.status_code == 200, walk.explain(response)
    assert "SAIL cohort extract" in walk.get("/datasets/sail-cohort").text

    # A refused researcher reads why, and can ask for a fresh check: the page sits at
    # /datasets/<name>, beside the files, yet reaches the gatekeeper unchecked.
    browser = walk.sign_in(SELF_ASSERTED)
    page = walk.get("/datasets/sail-cohort", browser)
    assert page.status_code == 200, walk.explain(page)
    assert "No access yet" in page.text
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
    response = browser.post(
        f"{walk.url}/check/sail-cohort", data={"csrf": token}, allow_redirects=False, timeout=15
    )
    assert response.status_code == 302, walk.explain(response)
    assert urljoin(walk.url, response.headers["Location"]) == f"{walk.url}/datasets/sail-cohort"
    assert walk.files.seen == []


# Routes only the gatekeeper's operators reach, never through the public proxy.
INTERNAL = {"/auth", "/auth/<path:original>", "/metrics", "/readyz"}
SAMPLE = {
    "name": "sail-cohort",
    "filename": "style.css",
    "dataset_key": "sail-linked",
    "qualification": "sail-dua",
    "token_id": "0123456789ab",
}


def page_routes():
    """Every route of the app (method, path), from its own URL map: a new page that the
    proxy configs forget fails the test below."""
    from app import create_app
    from app.saved_record import SavedRecord
    from app.settings import Settings

    app = create_app(
        Settings(
            secret_key="x" * 32,
            orcid_client_id="APP-ABCDEFGHIJKLMNOP",
            orcid_client_secret="s",
            policy_path="policies/",
        ),
        orcid_reader=SavedRecord({"qualifications": {}}),
    )
    found = []
    for rule in app.url_map.iter_rules():
        if rule.rule in INTERNAL:
            continue
        path = rule.rule
        for name, value in SAMPLE.items():
            path = re.sub(rf"<(?:\w+:)?{name}>", value, path)
        assert "<" not in path, f"no sample value for {rule.rule}"
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            found.append((method, path))
    return found


def test_every_page_of_the_app_reaches_the_gatekeeper_through_the_proxy(walk):
    browser = walk.sign_in(QUALIFIED)
    routes = page_routes()
    assert ("GET", "/disconnect") in routes and ("GET", "/steward/") in routes
    for method, path in routes:
        response = browser.request(method, walk.url + path, allow_redirects=False, timeout=15)
        # Only the gatekeeper sets its pages' policy: not the proxy, not the file server.
        policy = response.headers.get("Content-Security-Policy", "")
        assert "frame-ancestors 'none'" in policy, (method, path, walk.explain(response))
    assert walk.files.seen == []


def test_only_the_gatekeeper_pages_are_routed_to_it(walk):
    # The check is the proxy's to make, not a browser's; nor is anything else public.
    browser = walk.sign_in(QUALIFIED)
    for path in (
        "/auth?dataset=sail-cohort",
        "/auth/datasets/sail-cohort/hello.txt",
        "/metrics",
        "/readyz",
        "/elsewhere",
    ):
        response = walk.get(path, browser)
        assert response.status_code == 404, walk.explain(response)
    assert walk.files.seen == []


@pytest.mark.parametrize(
    "path, script_name",
    [
        ("/static/metrics", "/static"),
        ("/steward/metrics", "/steward"),
        ("/datasets/readyz", "/datasets"),
        ("/static/auth", "/static"),
    ],
)
def test_a_browser_cannot_move_a_page_route_onto_another_endpoint(walk, path, script_name):
    # gunicorn lets a trusted forwarder (the proxy, on loopback) set SCRIPT_NAME with a
    # header, and cuts it off the path: /static/metrics would reach /metrics. A browser's
    # header of that name must not pass for the proxy's.
    browser = walk.sign_in(QUALIFIED)
    expected = walk.get(path, browser, headers={"X-Original-URI": SAIL_FILE})
    headers = {"SCRIPT_NAME": script_name, "X-Original-URI": SAIL_FILE}
    response = walk.get(path, browser, headers=headers)
    assert response.status_code == expected.status_code, walk.explain(response)
    assert "# HELP" not in response.text and "X-Orcid-Id" not in response.headers
    assert walk.files.seen == []


@pytest.mark.parametrize(
    "path, headers",
    [
        (SAIL_FILE, {"X-Original-URI": SURVEY_FILE}),
        (SAIL_FILE, {"X-Forwarded-Uri": SURVEY_FILE}),
        # Spelled with underscores, a header reaches the same WSGI name as the proxy's.
        (SAIL_FILE, {"X_Original_URI": SURVEY_FILE}),
        (SAIL_FILE, {"X_Forwarded_Uri": SURVEY_FILE}),
        # Sent twice: a proxy that added its own to the browser's would make two of one.
        (SAIL_FILE, [("X-Original-URI", SURVEY_FILE), ("X-Original-URI", SURVEY_FILE)]),
        (SAIL_FILE, [("X-Forwarded-Uri", SURVEY_FILE), ("X-Forwarded-Uri", SURVEY_FILE)]),
        (SAIL_FILE + "?dataset=survey-microdata", {}),
        ("/datasets/survey-microdata/../sail-cohort/hello.txt", {}),
        ("/datasets/survey-microdata/%2e%2e/sail-cohort/hello.txt", {}),
        ("/datasets/survey-microdata/..%2fsail-cohort/hello.txt", {}),
    ],
    ids=[
        "x-original-uri",
        "x-forwarded-uri",
        "x_original_uri",
        "x_forwarded_uri",
        "x-original-uri-twice",
        "x-forwarded-uri-twice",
        "dataset-query",
        "dot-segments",
        "encoded-dot-segments",
        "encoded-slash",
    ],
)
def test_a_browser_cannot_have_another_url_checked_than_the_one_served(walk, path, headers):
    # Signed in as someone the survey admits and the SAIL extract refuses, the browser
    # asks for the SAIL file while pointing the check at the survey.
    browser = walk.sign_in(SELF_ASSERTED)
    if isinstance(headers, dict) and headers:
        response = walk.get(path, browser, headers=headers)
        status, body = response.status_code, response.text
    else:
        cookie = ("Cookie", f"gatekeeper_session={browser.cookies['gatekeeper_session']}")
        status, body = raw_get(walk.proxy.port, path, [cookie, *headers])
    assert status in (400, 403, 404), (
        f"GET {path} {headers} -> {status}: {body[:200]}\n"
        f"file server saw: {[seen for seen, _ in walk.files.seen]}"
    )
    assert SAIL_CONTENT not in body
    assert walk.files.seen == []


def test_no_proxy_tells_its_version(walk):
    for path in ("/elsewhere", "/healthz", SAIL_FILE):
        response = walk.get(path)
        server = response.headers.get("Server", "")
        assert not re.search(r"[0-9]", server), f"{path}: Server: {server}"
        assert not re.search(r"nginx/[0-9]", response.text), walk.explain(response)


def test_the_proxy_keeps_its_connections_to_the_gatekeeper_open(walk):
    browser = walk.sign_in(QUALIFIED)
    before = len(walk.gatekeeper_requests())
    checks = 12
    for n in range(checks):
        # A query of its own for each: nginx's auth cache would answer repeats itself.
        response = walk.get(f"{SAIL_FILE}?check={n}", browser)
        assert response.status_code == 200, walk.explain(response)
    ports = [port for port, path in walk.gatekeeper_requests()[before:] if path.startswith("/auth")]
    assert len(ports) == checks, walk.explain(response)
    # One connection per check would be a port per check (nginx without upstream keepalive).
    assert len(set(ports)) < checks / 2, f"{len(set(ports))} connections for {checks} checks"


class TestNginx:
    """What only nginx's config holds: its access log."""

    def test_the_access_log_never_holds_a_query(self, sites):
        nginx = sites.get("nginx")
        browser, response = sign_in(nginx.url, QUALIFIED, SAIL_FILE)
        assert response.status_code == 302, nginx.explain(response)
        callback = response.request.url
        query = parse_qs(urlsplit(callback).query)
        secrets = [query["code"][0], query["state"][0], "needle-in-the-query"]
        response = nginx.get(
            f"{SAIL_FILE}?q=needle-in-the-query",
            browser,
            headers={"Referer": callback},
        )
        assert response.status_code == 200, nginx.explain(response)

        # nginx writes an access line after sending the answer: wait for the file's.
        deadline = time.monotonic() + 5
        while True:
            lines = nginx.proxy.access_log.read_text().splitlines()
            served = [line for line in lines if f'"GET {SAIL_FILE} HTTP/1.1" 200' in line]
            if served or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert any('"GET /callback HTTP/1.1" 302' in line for line in lines), lines
        assert served and served[-1].endswith(f"orcid={QUALIFIED_ORCID}"), lines
        for line in lines:
            assert "?" not in line, line
            for secret in secrets:
                assert secret not in line, line
