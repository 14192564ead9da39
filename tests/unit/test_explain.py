"""The advice a refused researcher reads: someone they can actually ask, or what to do."""

import pytest

from app.decision import decide
from app.explain import explain_lines, next_step
from app.qualifications import read_item
from tests import orcid_json
from tests.conftest import OWN_CLIENT, RESEARCHER, UKDS, at


def refused(policy, dataset, items, now="2026-11-25"):
    decision = decide(
        policy,
        policy.dataset(dataset),
        [read_item(i) for i in items],
        orcid=RESEARCHER,
        now=at(now),
        own_client_id=OWN_CLIENT,
    )
    assert not decision.allowed
    return decision


def item(put_code, title, **kwargs):
    return orcid_json.qualification(put_code, owner=RESEARCHER, title=title, **kwargs)


class TestAdvice:
    def test_a_missing_qualification_names_its_provider_never_this_site(self, policy):
        decision = refused(policy, "sail", [])
        advice = next_step(policy, decision.requirements[0])
        assert advice == (
            'complete "Safe Researcher Training", then ask UK Data Service to add it to '
            "your ORCID record."
        )

    def test_a_self_assertable_qualification_says_add_it_yourself(self, policy):
        stale = item(1, "Data Protection Essentials", start="2020-01-01")
        decision = refused(policy, "open", [stale])
        assert next_step(policy, decision.requirements[0]) == (
            'renew "Data Protection Essentials", then add the new one to your ORCID '
            "record yourself."
        )

    def test_the_wrong_source_names_every_way_to_add_it(self, policy):
        srt = item(1, "Safe Researcher Training", src=orcid_json.source(client_id=UKDS))
        hsr = item(
            2,
            "Health services research",
            # self-asserted takes any identified source: only an unknown one fails.
            src=orcid_json.source(),
            external_ids=[("uri", "https://example.org/quals/hsr")],
        )
        decision = refused(policy, "sail", [srt, hsr])
        advice = next_step(policy, decision.requirements[1])
        assert "ask NIHR Learn to add" in advice
        assert "to your ORCID record yourself" in advice

    @pytest.mark.parametrize("dataset", ["sail", "open", "certs"])
    def test_no_advice_asks_this_site_or_asks_yourself(self, policy, dataset):
        text = "\n".join(explain_lines(policy, refused(policy, dataset, [])))
        assert "ask this site" not in text and "ask yourself" not in text
        assert "or yourself" not in text
