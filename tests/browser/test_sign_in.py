"""A researcher's sign-in, clicked through in a real browser: dataset -> ORCID -> dataset."""

import re

from playwright.sync_api import Page, expect

PROTECTED_FILE = "/datasets/sail-cohort/README.txt"
DATASET_PAGE = "/datasets/sail-cohort"


def consent(page: Page, persona: str):
    """Open the protected file and arrive, via /login, at the emulator's consent page."""
    page.goto(PROTECTED_FILE)
    expect(page).to_have_title(re.compile("Authorize access"))
    # The label reads "Amara Okafor 0009-... (qualified)": the key in brackets is unique.
    page.get_by_label(f"({persona})").check()
    expect(page.get_by_role("radio", name=f"({persona})")).to_be_checked()


class TestSignIn:
    def test_qualified_persona_returns_to_the_file_and_is_granted(self, page, screenshot):
        consent(page, "qualified")
        screenshot(page, "consent")
        page.get_by_role("button", name="Authorize access").click()

        page.wait_for_url(f"**{PROTECTED_FILE}")
        expect(page.get_by_text("SAIL cohort extract (demo)")).to_be_visible()

        page.goto(DATASET_PAGE)
        expect(page.get_by_role("status")).to_contain_text("Access granted")
        expect(page.get_by_role("navigation", name="Account")).to_contain_text(
            "0009-0000-0000-0017"
        )
        screenshot(page, "access-granted")

    def test_self_asserted_persona_is_refused_and_told_why(self, page, screenshot):
        consent(page, "self-asserted")
        page.get_by_role("button", name="Authorize access").click()

        page.wait_for_url(f"**{PROTECTED_FILE}")
        expect(page.get_by_role("heading", level=1)).to_contain_text("No access")

        page.goto(DATASET_PAGE)
        expect(page.get_by_role("status")).to_contain_text("No access yet")
        expect(
            page.get_by_text("added by yourself; this dataset needs it from UK Data Service").first
        ).to_be_visible()
        screenshot(page, "access-refused")

    def test_deny_at_consent_shows_the_friendly_page(self, page, screenshot):
        consent(page, "qualified")
        page.get_by_role("button", name="Deny access").click()

        expect(page.get_by_role("heading", name="You did not give permission")).to_be_visible()
        expect(
            page.get_by_role("navigation", name="Account").get_by_role(
                "link", name="Sign in with ORCID"
            )
        ).to_be_visible()
        screenshot(page, "consent-denied")
