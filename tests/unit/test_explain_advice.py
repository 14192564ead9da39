"""What a researcher is told to do when their ORCID record could not be read."""

import pytest

from app.decision import ReadError, refuse_unreadable
from app.errors import (
    AccessForbidden,
    MalformedResponse,
    OrcidUnavailable,
    RecordDeactivated,
    RecordDeprecated,
    RecordLocked,
    RecordNotFound,
    RecordUnclaimed,
    TokenInvalid,
    TooManyCandidates,
)
from app.explain import ORCID_SUPPORT, explain_lines, read_error_advice
from tests.conftest import RESEARCHER, at
from tests.unit.test_pages import VISIBILITY_ASKS

ERRORS = [
    RecordLocked(),
    RecordDeactivated(),
    RecordUnclaimed(),
    RecordNotFound(),
    RecordDeprecated("0000-0001-5109-3700"),
    RecordDeprecated(),
    TokenInvalid(),
    AccessForbidden(),
    OrcidUnavailable(),
    MalformedResponse(),
    TooManyCandidates(80, 50),
]


def advice_for(error, **kwargs):
    return read_error_advice(ReadError(error.reason, error.message), **kwargs)


class TestReadErrorAdvice:
    @pytest.mark.parametrize("error", ERRORS, ids=lambda e: e.reason)
    def test_never_asks_this_site_yourself_or_to_change_visibility(self, error):
        text = advice_for(error).text
        assert "ask this site" not in text and "ask yourself" not in text
        assert not VISIBILITY_ASKS.search(text)

    @pytest.mark.parametrize(
        "error", [RecordLocked(), RecordDeactivated(), RecordUnclaimed(), MalformedResponse()]
    )
    def test_records_orcid_will_not_serve_point_to_orcid_support(self, error):
        advice = advice_for(error)
        assert advice.orcid_support
        assert "contact ORCID support" in advice.text

    def test_a_merged_record_names_the_primary_id_as_a_full_uri(self):
        advice = advice_for(
            RecordDeprecated("0000-0001-5109-3700"), orcid_base_url="https://sandbox.orcid.org/"
        )
        assert advice.merged and advice.primary_orcid == "0000-0001-5109-3700"
        assert advice.text.startswith(
            "sign out and sign in with https://sandbox.orcid.org/0000-0001-5109-3700,"
        )

    def test_a_merged_record_without_a_primary_still_says_what_to_do(self):
        advice = advice_for(RecordDeprecated())
        assert advice.merged and advice.primary_orcid is None
        assert "your primary ORCID iD" in advice.text

    @pytest.mark.parametrize("error", [AccessForbidden(), TooManyCandidates(80, 50)])
    def test_what_we_could_not_read_names_the_steward(self, error):
        assert advice_for(error).steward


def test_gatekeeper_explain_prints_what_to_do_with_orcid_supports_address(policy):
    decision = refuse_unreadable(
        policy, policy.dataset("sail"), orcid=RESEARCHER, error=RecordLocked(), now=at("2026-11-25")
    )
    lines = explain_lines(policy, decision)
    assert lines[3] == (
        "  What to do: contact ORCID support, who can tell you why your record is locked and "
        f"how to unlock it; then check again. ORCID support: {ORCID_SUPPORT}"
    )
