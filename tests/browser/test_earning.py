"""Earning the SAIL agreement in a real browser: terms -> ORCID -> Deny, then again ->
Authorize -> the item is on the (emulated) record, by us, and the dataset opens."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import requests
from playwright.sync_api import Page, expect

from tests.browser.conftest import axe_violations

QUALIFIED = "0009-0000-0000-0017"  # the "qualified" persona: safe-researcher from UKDS
DATASET_PAGE = "/datasets/sail-linked"  # requires safe-researcher and sail-dua
TERMS_PAGE = "/earn/sail-linked/sail-dua"
FILE = "/datasets/sail-linked/README.txt"
TITLE = "Accepted the SAIL data access agreement"
TERMS_URL = "https://example.org/sail/data-access-agreement"
DEMO_CLIENT = ("APP-GATEKEEPERDEMO01", "ORCID Gatekeeper (demo)")


def sign_in(page: Page, persona: str, then: str) -> str:
    """Sign in at the emulator as ``persona``, land on ``then``; the emulator's base URL."""
    page.goto(f"/login?next={then}")
    expect(page).to_have_title(re.compile("Authorize access"))
    parts = urlsplit(page.url)
    page.get_by_label(f"({persona})").check()
    page.get_by_role("button", name="Authorize access").click()
    page.wait_for_url(f"**{then}")
    return f"{parts.scheme}://{parts.netloc}"


def accept_terms(page: Page):
    """From the dataset page, through the terms, to ORCID's consent page for writing."""
    page.goto(DATASET_PAGE)
    page.get_by_role("link", name="Earn it here").click()
    page.wait_for_url(f"**{TERMS_PAGE}")
    page.get_by_label("I have read and accept the terms").check()
    page.get_by_role("button", name="Accept and add it to my ORCID record").click()
    expect(page).to_have_title(re.compile("Authorize access"))
    scopes = page.get_by_role("list")
    expect(scopes).to_contain_text("Add/update your research activities")
    expect(scopes).to_contain_text("Trusted Organizations")
    page.get_by_label("(qualified)").check()


def our_items(orcid_url: str, orcid: str) -> list[dict]:
    """Our SAIL agreement items on the record, as ORCID's public view shows them.

    NOTE: the emulator has no HTML record page (the earned page's record link is
    orcid.org's), so the record is read as JSON; the persona's default visibility for
    new items is public, so no token is needed.
    """
    body = requests.get(
        f"{orcid_url}/v3.0/{orcid}/qualifications",
        headers={"Accept": "application/vnd.orcid+json"},
        timeout=5,
    ).json()
    return [
        summary["qualification-summary"]
        for group in body["affiliation-group"]
        for summary in group["summaries"]
        if summary["qualification-summary"]["role-title"] == TITLE
    ]


class TestEarning:
    def test_deny_writes_nothing_then_authorize_adds_it_and_the_dataset_opens(
        self, page, axe_source, screenshot
    ):
        orcid_url = sign_in(page, "qualified", DATASET_PAGE)
        expect(page.get_by_role("status")).to_contain_text("No access yet")
        assert our_items(orcid_url, QUALIFIED) == []

        # The terms page: the terms, linked, and exactly what will be written.
        page.get_by_role("link", name="Earn it here").click()
        page.wait_for_url(f"**{TERMS_PAGE}")
        main = page.get_by_role("main")
        expect(main.get_by_role("heading", level=1)).to_have_text(TITLE)
        expect(main.get_by_role("link", name="the terms (version 2026-1)")).to_have_attribute(
            "href", TERMS_URL
        )
        expect(main.get_by_role("heading", name="What will be written")).to_be_visible()
        preview = main.locator("dl.preview")
        expect(preview).to_contain_text(TITLE)
        expect(preview).to_contain_text("SAIL Databank, Swansea, GB")
        expect(preview).to_contain_text(f"sail-dua-2026-1-{QUALIFIED}")
        expect(preview).to_contain_text("this service, as its source")
        assert axe_violations(page, axe_source) == []
        screenshot(page, "earn-terms")

        # Deny at ORCID: nothing written, still signed in.
        accept_terms(page)
        page.get_by_role("button", name="Deny access").click()
        expect(
            page.get_by_role("heading", name="Nothing was added to your ORCID record")
        ).to_be_visible()
        account = page.get_by_role("navigation", name="Account")
        expect(account).to_contain_text(QUALIFIED)
        expect(account.get_by_role("link", name="Sign out")).to_be_visible()
        assert axe_violations(page, axe_source) == []
        assert our_items(orcid_url, QUALIFIED) == []
        page.get_by_role("link", name="Back to the dataset").click()
        page.wait_for_url(f"**{DATASET_PAGE}")
        expect(page.get_by_role("status")).to_contain_text("No access yet")
        page.goto("/datasets/sail-cohort")  # one the persona qualifies for
        expect(page.get_by_role("status")).to_contain_text("Access granted")

        # Again, and Authorize: added, its visibility explained, and the dataset opens.
        accept_terms(page)
        page.get_by_role("button", name="Authorize access").click()
        page.wait_for_url(f"**{TERMS_PAGE}/earned")
        main = page.get_by_role("main")
        expect(main.get_by_role("heading", level=1)).to_have_text("Added to your ORCID record")
        expect(main).to_contain_text(f'"{TITLE}" is on your ORCID record, added by this service')
        expect(main.get_by_role("heading", name="Who can see it")).to_be_visible()
        expect(main).to_contain_text("ORCID gave it the visibility public")
        expect(main.get_by_role("status")).to_contain_text("Access granted")
        assert axe_violations(page, axe_source) == []
        screenshot(page, "earned")

        page.get_by_role("link", name="/datasets/sail-linked/").click()
        expect(page.get_by_role("link", name="README.txt")).to_be_visible()
        page.goto(FILE)
        expect(page.get_by_text("SAIL linked records (demo)")).to_be_visible()

        # On the record: one item, with this service as its source.
        (item,) = our_items(orcid_url, QUALIFIED)
        assert item["source"]["source-client-id"]["path"] == DEMO_CLIENT[0]
        assert item["source"]["source-name"]["value"] == DEMO_CLIENT[1]
        assert item["visibility"] == "public"
        assert item["organization"]["name"] == "SAIL Databank"
