"""The gatekeeper against the emulator's Public and Member APIs, which behave as ORCID's do.

ORCID's Public API answers qualification reads for a locked, deactivated or unclaimed
record (PublicV3ApiServiceDelegatorImpl never checks the status there); only ``/person``
refuses. The gatekeeper must read ``/person`` to refuse them: ORCID_CHECK_RECORD_STATUS
turns that on for an API URL (like the emulator's) that is not a ``pub.`` host. The Member
API refuses such records on every call (MemberV3ApiServiceDelegatorImpl).
"""

import json

import pytest
import requests

from app.emulator import create_app
from app.emulator.server import serve_in_thread
from tests.integration.conftest import EMULATOR_CLIENT, Emulator, sign_in

MEMBER_CLIENT = {
    "client_id": "APP-GATEKEEPERMEMBER",
    "client_secret": "member-secret",
    "name": "Gatekeeper under test (member)",
    "redirect_uris": "any-loopback",
    "member": True,
}
LOCKED = "0009-0000-0000-0076"
ORCID_JSON = {"Accept": "application/vnd.orcid+json"}


@pytest.fixture(scope="module")
def emulator():
    """An emulator knowing a member client too (overrides conftest's for this module)."""
    base_url, shutdown = serve_in_thread(create_app(clients=[EMULATOR_CLIENT, MEMBER_CLIENT]))
    yield Emulator(base_url)
    shutdown()


def decisions(gatekeeper) -> list[dict]:
    with open(gatekeeper.log.name) as log:
        lines = log.read().splitlines()
    found = [json.loads(line) for line in lines if line.startswith("{")]
    return [line for line in found if line.get("message") == "decision"]


def check(gatekeeper, persona: str, dataset: str) -> tuple[int, dict]:
    """Sign ``persona`` in, ask /auth for ``dataset``: the status and the decision logged
    (outcome ``error`` when the record could not be read)."""
    browser, response = sign_in(gatekeeper.url, persona)
    assert response.status_code == 302, response.text
    status = browser.get(f"{gatekeeper.url}/auth?dataset={dataset}", timeout=15).status_code
    (decision,) = [d for d in decisions(gatekeeper) if d["dataset"] == dataset]
    return status, decision


def public_gatekeeper(start_gatekeeper, redis_url, orcid, check_status: str):
    return start_gatekeeper(
        redis_url=redis_url,
        ORCID_API_URL=f"{orcid.url}/pub/v3.0",
        ORCID_CHECK_RECORD_STATUS=check_status,
    )


class TestPublicApi:
    def test_the_emulators_public_api_serves_a_locked_records_qualifications(self, orcid):
        base = f"{orcid.url}/pub/v3.0/{LOCKED}"
        assert requests.get(f"{base}/qualifications", headers=ORCID_JSON, timeout=5).ok
        person = requests.get(f"{base}/person", headers=ORCID_JSON, timeout=5)
        assert (person.status_code, person.json()["error-code"]) == (409, 9018)

    def test_without_the_person_check_a_locked_record_would_open_a_dataset(
        self, start_gatekeeper, redis_url, orcid
    ):
        # Why the check exists: the summary and the item read fine, so the decision allows.
        gatekeeper = public_gatekeeper(start_gatekeeper, redis_url, orcid, "0")
        status, decision = check(gatekeeper, "locked", "survey-microdata")
        assert (status, decision["outcome"]) == (200, "allow")
        assert orcid.requests()["person"] == 0

    @pytest.mark.parametrize(
        "persona, reason",
        [
            ("locked", "record_locked"),
            ("deactivated", "record_deactivated"),
            ("unclaimed", "record_unclaimed"),
        ],
    )
    def test_a_record_orcid_will_not_serve_is_refused_because_of_person(
        self, start_gatekeeper, redis_url, orcid, persona, reason
    ):
        gatekeeper = public_gatekeeper(start_gatekeeper, redis_url, orcid, "1")
        status, decision = check(gatekeeper, persona, "survey-microdata")
        assert (status, decision["outcome"], decision["reasons"]) == (403, "error", [reason])
        assert orcid.requests()["person"] == 1

    def test_an_active_record_is_still_allowed_with_the_person_check(
        self, start_gatekeeper, redis_url, orcid
    ):
        gatekeeper = public_gatekeeper(start_gatekeeper, redis_url, orcid, "1")
        status, decision = check(gatekeeper, "qualified", "survey-microdata")
        assert (status, decision["outcome"]) == (200, "allow")


class TestMemberApi:
    def test_a_locked_record_read_through_the_member_api_is_refused(
        self, start_gatekeeper, redis_url, orcid
    ):
        gatekeeper = start_gatekeeper(
            redis_url=redis_url,
            ORCID_SCOPE="/read-limited",
            ORCID_CLIENT_ID=MEMBER_CLIENT["client_id"],
            ORCID_CLIENT_SECRET=MEMBER_CLIENT["client_secret"],
            ORCID_API_URL=f"{orcid.url}/api/v3.0",
        )
        status, decision = check(gatekeeper, "locked", "survey-microdata")
        assert (status, decision["outcome"], decision["reasons"]) == (
            403,
            "error",
            ["record_locked"],
        )
        # The Member API's own check refused it: the gatekeeper asked no /person.
        assert orcid.requests()["person"] == 0


def test_search_and_link_items_count_as_the_researchers_own(start_gatekeeper, redis_url, orcid):
    # Safe Researcher Training imported by a user-OBO client is self-asserted: sail-cohort
    # wants it from UK Data Service; Data Protection Essentials may be self-asserted.
    gatekeeper = start_gatekeeper(redis_url=redis_url)
    browser, response = sign_in(gatekeeper.url, "search-and-link")
    assert response.status_code == 302, response.text
    sail = browser.get(f"{gatekeeper.url}/auth?dataset=sail-cohort", timeout=15)
    survey = browser.get(f"{gatekeeper.url}/auth?dataset=survey-microdata", timeout=15)
    assert (sail.status_code, survey.status_code) == (403, 200)
    (sail_decision,) = [d for d in decisions(gatekeeper) if d["dataset"] == "sail-cohort"]
    assert "wrong_source" in sail_decision["reasons"]
