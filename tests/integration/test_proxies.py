"""The configs in docs/proxies/ on the real nginx, Caddy, Traefik and Envoy, end to end.

Each proxy serves its docs config (rendered by tests/integration/proxies.py) in front of
a gatekeeper whose PUBLIC_URL is the proxy, and of a file server that records what
reaches it. A browser walks: a file asks for sign-in, sign-in goes through the proxy,
the file is served with the researcher's identity, and refusals stop at the proxy.
"""

from __future__ import annotations

import http.client
import re
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import redis
import requests

from tests.integration.conftest import Gatekeeper, free_port, gatekeeper_env, sign_in
from tests.integration.proxies import PROXIES, FileServer, missing_binary, tail

# Personas of the ORCID emulator (app/emulator/fixtures/personas.yaml) under policies/:
QUALIFIED = "qualified"  # may open sail-cohort
QUALIFIED_ORCID = "0009-0000-0000-0017"
SELF_ASSERTED = "self-asserted"  # refused sail-cohort, may open survey-microdata
FORGED_ORCID = "0000-0002-1825-0097"

SAIL_FILE = "/datasets/sail-cohort/hello.txt"
SAIL_CONTENT = "hello from the SAIL cohort extract\n"
SURVEY_FILE = "/datasets/survey-microdata/hello.txt"
SURVEY_CONTENT = "hello from the household survey\n"


class Site:
    """One proxy with its gatekeeper and the shared file server, as a browser sees them."""

    def __init__(self, proxy, gatekeeper, files):
        self.proxy, self.gatekeeper, self.files = proxy, gatekeeper, files
        self.url = proxy.url

    def get(self, path, browser=requests, **kwargs):
        return browser.get(self.url + path, allow_redirects=False, timeout=15, **kwargs)

    def sign_in(self, persona, next_path="/"):
        browser, response = sign_in(self.url, persona, next_path)
        assert response.status_code == 302, self.explain(response)
        return browser

    def explain(self, response) -> str:
        """What went wrong, with the logs of everything behind the proxy."""
        request = response.request
        return (
            f"{request.method} {request.url} -> {response.status_code}\n"
            f"headers: {dict(response.headers)}\nbody: {response.text[:500]}\n"
            f"file server saw: {[path for path, _ in self.files.seen]}\n"
            f"{self.proxy.logs()}\n"
            f"--- gatekeeper ---\n{tail(self.proxy.tmp / 'gatekeeper.log')}"
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


@pytest.fixture(scope="module", params=list(PROXIES))
def site(request, tmp_path_factory, emulator, redis_server, files):
    """A proxy started from its docs config, in front of a gatekeeper of its own."""
    name = request.param
    problem = missing_binary(name)
    if problem:
        pytest.fail(problem)
    if redis_server.process.poll() is not None:  # another module's test stopped it
        redis_server.start()
    # A Redis database of its own, so that (say) one gatekeeper's rate limit on "check
    # again" does not carry over to the next.
    redis_url = f"{redis_server.url.rsplit('/', 1)[0]}/{list(PROXIES).index(name) + 1}"
    with redis.Redis.from_url(redis_url) as client:
        client.flushdb()
    tmp = tmp_path_factory.mktemp(name)
    port, gatekeeper_port = free_port(), free_port()
    proxy = PROXIES[name](tmp, port, gatekeeper_port, files.port)
    env = gatekeeper_env(
        tmp, emulator, redis_url, public_url=proxy.url, **proxy.gatekeeper_settings
    )
    gatekeeper = Gatekeeper(env, gatekeeper_port)
    try:
        proxy.start()
    except Exception:
        gatekeeper.stop()
        raise
    yield Site(proxy, gatekeeper, files)
    proxy.stop()
    gatekeeper.stop()


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
    assert response.status_code == 403, walk.explain(response)
    assert walk.files.seen == []
    # The same researcher qualifies for the survey: the check is per dataset.
    response = walk.get(SURVEY_FILE, browser)
    assert response.status_code == 200, walk.explain(response)
    assert response.text == SURVEY_CONTENT


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


def raw_get(site, path, session_cookie) -> tuple[int, str]:
    """GET ``path`` exactly as written (requests would resolve dot segments first)."""
    connection = http.client.HTTPConnection("127.0.0.1", site.proxy.port, timeout=15)
    try:
        connection.request("GET", path, headers={"Cookie": f"gatekeeper_session={session_cookie}"})
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


@pytest.mark.parametrize(
    "path, headers",
    [
        (SAIL_FILE, {"X-Original-URI": SURVEY_FILE}),
        (SAIL_FILE, {"X-Forwarded-Uri": SURVEY_FILE}),
        (SAIL_FILE + "?dataset=survey-microdata", {}),
        ("/datasets/survey-microdata/../sail-cohort/hello.txt", {}),
        ("/datasets/survey-microdata/%2e%2e/sail-cohort/hello.txt", {}),
        ("/datasets/survey-microdata/..%2fsail-cohort/hello.txt", {}),
    ],
    ids=[
        "x-original-uri",
        "x-forwarded-uri",
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
    if headers:
        response = walk.get(path, browser, headers=headers)
        status, body = response.status_code, response.text
    else:
        status, body = raw_get(walk, path, browser.cookies["gatekeeper_session"])
    assert status in (400, 403, 404), (
        f"GET {path} {headers} -> {status}: {body[:200]}\n"
        f"file server saw: {[seen for seen, _ in walk.files.seen]}"
    )
    assert SAIL_CONTENT not in body
    assert walk.files.seen == []
