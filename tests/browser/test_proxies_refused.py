"""A refused researcher, in a real browser behind each real proxy, reaches the explanation.

Each proxy serves its config from docs/proxies/ (tests/integration/proxies.py) in front of
a gatekeeper of its own and a file server. The researcher opens a file, signs in at the
ORCID emulator, and is refused: behind nginx the proxy redirects to the dataset's page;
behind Traefik, Caddy and Envoy the browser shows the gatekeeper's refusal page, whose
link leads there. Either way the page says why, and the file server is never reached.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import VIEWPORT
from tests.integration.conftest import emulator, redis_server  # noqa: F401 (fixtures)
from tests.integration.proxies import PROXIES, FileServer, Sites

PROTECTED_FILE = "/datasets/sail-cohort/hello.txt"
DATASET_PAGE = "/datasets/sail-cohort"


@pytest.fixture(scope="module")
def sites(tmp_path_factory, emulator, redis_server):  # noqa: F811 (the imported fixtures)
    files = FileServer(tmp_path_factory.mktemp("files"))
    files.put(PROTECTED_FILE, "hello from the SAIL cohort extract\n")
    started = Sites(tmp_path_factory, emulator, redis_server, files)
    yield started
    started.stop()
    files.stop()


@pytest.fixture(params=list(PROXIES))
def site(request, sites):
    return sites.get(request.param)


@pytest.fixture
def page(browser, site):
    """A page in a fresh browser context on the proxy, keeping what the CSP blocked."""
    context = browser.new_context(viewport=VIEWPORT, base_url=site.url)
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.blocked = []
    page.on(
        "console",
        lambda message: "Content Security Policy" in message.text and page.blocked.append(message),
    )
    yield page
    context.close()


def test_a_refused_researcher_reaches_the_explanation(site, page):
    site.files.seen.clear()
    page.goto(PROTECTED_FILE)
    expect(page).to_have_title(re.compile("Authorize access"))
    page.get_by_label("(self-asserted)").check()
    page.get_by_role("button", name="Authorize access").click()

    if site.proxy.name == "nginx":
        # auth_request never shows our page: the config redirects to the explanation.
        page.wait_for_url(f"{site.url}{DATASET_PAGE}")
    else:
        page.wait_for_url(f"{site.url}{PROTECTED_FILE}")
        expect(page.get_by_role("heading", level=1)).to_have_text(
            "No access to SAIL cohort extract yet"
        )
        # Its stylesheet loads and nothing breaks the Content-Security-Policy.
        expect(page.locator("a.button")).to_have_css("display", "inline-block")
        assert page.blocked == [], [message.text for message in page.blocked]
        page.get_by_role("link", name="See why, and what to do").click()
        page.wait_for_url(f"{site.url}{DATASET_PAGE}")

    expect(page.get_by_role("status")).to_contain_text("No access")
    # The reasons: each of the dataset's requirements, by the name the policy gives it.
    main = page.get_by_role("main")
    expect(main).to_contain_text("Safe Researcher Training")
    expect(main).to_contain_text("UK Data Service")
    assert [path for path, _ in site.files.seen] == []
