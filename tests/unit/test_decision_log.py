"""The decision log line: its outcome and the reasons that decided, nothing else."""

from app.access import deciding_reasons, decision_outcome
from app.decision import decide, refuse_unreadable
from app.errors import OrcidUnavailable
from app.qualifications import read_item
from tests import orcid_json
from tests.conftest import NIHR, OWN_CLIENT, RESEARCHER, UKDS, at


def judge(policy, items):
    return decide(
        policy,
        policy.dataset("sail"),
        [read_item(i) for i in items],
        orcid=RESEARCHER,
        now=at("2026-11-25"),
        own_client_id=OWN_CLIENT,
    )


def item(put_code, title, client):
    src = orcid_json.source(client_id=client) if client else None
    return orcid_json.qualification(put_code, owner=RESEARCHER, title=title, src=src)


class TestDecisionLog:
    def test_a_refusal_names_only_the_unmet_requirements_reasons(self, policy):
        decision = judge(
            policy,
            [
                item(1, "Safe Researcher Training", UKDS),  # meets the first requirement
                item(2, "Safe Researcher Training", None),  # self-asserted: fails, decides nothing
                item(3, "Good Clinical Practice", "APP-UNTRUSTED0000001"),
            ],
        )
        assert decision_outcome(decision) == "deny"
        assert deciding_reasons(decision) == ["wrong_source"]
        failing_met = decision.requirements[0].candidates[1].failures
        assert [f.reason for f in failing_met] == ["wrong_source"]  # logged nowhere

    def test_an_unmet_requirement_without_candidates_is_missing(self, policy):
        decision = judge(policy, [item(1, "Safe Researcher Training", UKDS)])
        assert deciding_reasons(decision) == ["missing"]

    def test_an_allow_has_no_reasons(self, policy):
        decision = judge(
            policy,
            [
                item(1, "Safe Researcher Training", UKDS),
                item(2, "Safe Researcher Training", None),
                item(3, "Good Clinical Practice", NIHR),
            ],
        )
        assert decision_outcome(decision) == "allow" and deciding_reasons(decision) == []

    def test_an_orcid_failure_is_an_error_not_a_deny(self, policy):
        decision = refuse_unreadable(
            policy,
            policy.dataset("sail"),
            orcid=RESEARCHER,
            error=OrcidUnavailable(),
            now=at("2026-11-25"),
        )
        assert decision_outcome(decision) == "error"
        assert deciding_reasons(decision) == ["orcid_unavailable"]
