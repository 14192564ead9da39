"""The steward console in a real browser, against gunicorn with Redis and the ORCID emulator:
axe-core finds nothing, a non-steward meets a 403 that says why, Revoke works by click."""

from __future__ import annotations

import re

import pytest
import requests
from playwright.sync_api import Page, expect

from tests.browser.conftest import VIEWPORT, axe_violations
from tests.integration.conftest import (
    Gatekeeper,
    emulator,  # noqa: F401 (a fixture)
    free_port,
    gatekeeper_env,
    redis_server,  # noqa: F401 (a fixture)
    sign_in,
)

DATASET_FILE = {"X-Original-URI": "/datasets/sail-cohort/data.csv"}
STEWARD = "empty"  # the persona the console's STEWARD_ORCIDS names


@pytest.fixture(scope="module")
def ids(emulator):  # noqa: F811 (the imported fixture)
    """Each persona's iD, by its key."""
    personas = requests.get(f"{emulator.url}/_emulator/personas", timeout=5).json()
    return {p["key"]: p["orcid"] for p in personas}


@pytest.fixture
def gatekeeper(tmp_path, emulator, redis_server, ids):  # noqa: F811 (the imported fixtures)
    """gunicorn with a steward, after three researchers were checked for sail-cohort."""
    redis_server.client.flushall()
    emulator.reset()
    port = free_port()
    env = gatekeeper_env(
        tmp_path,
        emulator,
        redis_server.url,
        f"http://127.0.0.1:{port}",
        STEWARD_ORCIDS=ids[STEWARD],
    )
    server = Gatekeeper(env, port)
    try:
        for persona in ("qualified", "self-asserted", "expired"):
            browser, _ = sign_in(server.url, persona)
            browser.get(f"{server.url}/auth", headers=DATASET_FILE, timeout=15)
        yield server
    finally:
        server.stop()


@pytest.fixture
def page(browser, gatekeeper):
    context = browser.new_context(viewport=VIEWPORT, base_url=gatekeeper.url)
    context.set_default_timeout(10_000)
    yield context.new_page()
    context.close()


def sign_in_as(page: Page, persona: str, then: str = "/steward/"):
    """Sign in at the emulator as ``persona``; ``then`` may answer 403."""
    page.goto(f"/login?next={then}")
    expect(page).to_have_title(re.compile("Authorize access"))
    page.get_by_label(f"({persona})").check()
    page.get_by_role("button", name="Authorize access").click()
    page.wait_for_url(f"**{then}")


def dataset_with_an_explanation_open(page: Page):
    sign_in_as(page, STEWARD, "/steward/sail-cohort")
    page.get_by_role("main").locator("summary").first.click()


PAGES = [
    ("signed-out", lambda page: page.goto("/steward/"), "Sign in with ORCID"),
    ("not-a-steward", lambda page: sign_in_as(page, "qualified"), "Stewards only"),
    ("index", lambda page: sign_in_as(page, STEWARD), "SAIL cohort extract"),
    ("dataset", dataset_with_an_explanation_open, "What the researcher can do"),
    (
        "revoked",
        lambda page: (
            sign_in_as(page, STEWARD, "/steward/sail-cohort"),
            page.get_by_role("button", name=re.compile("^Revoke")).first.click(),
        ),
        "were dropped",
    ),
]


@pytest.mark.parametrize(("go", "shows"), [p[1:] for p in PAGES], ids=[p[0] for p in PAGES])
def test_axe_core_finds_no_violations(page, axe_source, screenshot, go, shows, request):
    go(page)
    expect(page.get_by_role("main")).to_contain_text(shows)
    screenshot(page, f"steward-{request.node.callspec.id}")
    assert axe_violations(page, axe_source) == []


class TestStewardsOnly:
    def test_a_signed_out_visitor_gets_403_and_the_sign_in_link(self, page):
        response = page.goto("/steward/sail-cohort")
        assert response.status == 403
        link = page.get_by_role("main").get_by_role("link", name="Sign in with ORCID")
        expect(link).to_have_attribute("href", "/login?next=/steward/sail-cohort")

    def test_a_researcher_who_is_no_steward_gets_403_saying_so(self, page, ids):
        sign_in_as(page, "qualified", "/datasets/sail-cohort")
        nav = page.get_by_role("navigation", name="Account")
        expect(nav.get_by_role("link", name="Steward console")).to_have_count(0)
        response = page.goto("/steward/")
        assert response.status == 403
        expect(page.get_by_role("heading", level=1)).to_have_text("Stewards only")
        expect(page.get_by_role("main")).to_contain_text(ids["qualified"])

    def test_a_steward_reaches_it_from_the_header(self, page):
        sign_in_as(page, STEWARD, "/")
        page.get_by_role("navigation", name="Account").get_by_role(
            "link", name="Steward console"
        ).click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Steward console")
        page.get_by_role("link", name="SAIL cohort extract").click()
        expect(page.get_by_role("heading", level=1)).to_contain_text("SAIL cohort extract")


class TestDatasetPage:
    def test_shows_access_refusals_and_explanations(self, page, ids):
        sign_in_as(page, STEWARD, "/steward/sail-cohort")
        main = page.get_by_role("main")
        access = main.get_by_role("table", name="Who has access now")
        expect(access).to_contain_text(ids["qualified"])
        expect(access).not_to_contain_text(ids["self-asserted"])
        refusals = main.get_by_role("table", name=re.compile("^Refusals in the last"))
        expect(refusals.get_by_role("row", name=re.compile("wrong_source"))).to_have_count(1)
        # The bars come from the style sheet and SVG attributes: the CSP let them draw.
        bar = refusals.locator("svg.bar rect").first
        assert float(bar.get_attribute("width")) > 0
        assert bar.bounding_box()["width"] > 10
        expect(main).to_contain_text("added by the researcher")

    def test_revoke_by_click_says_so_and_the_grant_is_no_longer_cached(self, page, ids):
        qualified = ids["qualified"]
        sign_in_as(page, STEWARD, "/steward/sail-cohort")
        page.get_by_role("button", name=f"Revoke cached decisions for {qualified}").click()
        page.wait_for_url("**/steward/sail-cohort")
        expect(page.get_by_role("status")).to_contain_text(
            f"Cached decisions for {qualified} were dropped"
        )
        expect(page.get_by_role("table", name="Who has access now")).to_contain_text(
            "not cached now"
        )

    def test_the_export_link_downloads_a_csv(self, page):
        sign_in_as(page, STEWARD, "/steward/sail-cohort")
        with page.expect_download() as download:
            page.get_by_role("link", name=re.compile("as CSV")).click()
        assert re.fullmatch(
            r"decisions-sail-cohort-7d-\d{4}-\d\d-\d\d\.csv", download.value.suggested_filename
        )
