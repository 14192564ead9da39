"""Impact preview: logged decisions replayed against a candidate policy, never ORCID."""

import datetime as dt

import pytest

from app.access import AccessChecker
from app.cache import MemoryStore
from app.decision_log import MemoryDecisionLog
from app.impact import preview
from app.policy import PolicyFile, load_policy
from app.saved_record import SavedRecord
from tests import orcid_json
from tests.conftest import NIHR, POLICY, RESEARCHER, UKDS, at

OTHER = "0000-0001-5109-3700"
NOW = at("2026-11-25")


class Record(SavedRecord):
    """Saved records for several researchers; counts reads."""

    def __init__(self, items_by_orcid):
        super().__init__({"qualifications": {}})
        self.records = {
            orcid: SavedRecord({"orcid": orcid, "qualifications": orcid_json.summaries(orcid, i)})
            for orcid, i in items_by_orcid.items()
        }
        self.reads = 0

    def read_qualifications(self, orcid, wanted=lambda q: True, token=None):
        self.reads += 1
        return self.records[orcid].read_qualifications(orcid, wanted, token)


class NoOrcid:
    """A reader that fails the test if anyone calls it."""

    def read_qualifications(self, *args, **kwargs):
        raise AssertionError("the impact preview called ORCID")


def item(put_code, title, client, owner=RESEARCHER, **kwargs):
    src = orcid_json.source(client_id=client) if client else orcid_json.source(orcid=owner)
    return orcid_json.qualification(put_code, owner=owner, title=title, src=src, **kwargs)


@pytest.fixture
def logged(write_policy):
    """Decisions for two researchers on two datasets, made and logged by AccessChecker."""
    log = MemoryDecisionLog()
    record = Record(
        {
            RESEARCHER: [
                item(1, "Safe Researcher Training", UKDS),
                item(2, "Good Clinical Practice", None),  # self-asserted: gcp needs nihr
                item(3, "Data Protection Essentials", None, start="2024-06"),  # too old
                item(4, "Statistics for Everyone", None, start="2026-06"),  # no rule's
            ],
            OTHER: [
                item(1, "Safe Researcher Training", UKDS, owner=OTHER),
                item(2, "Good Clinical Practice", NIHR, owner=OTHER),
            ],
        }
    )
    checker = AccessChecker(
        PolicyFile(write_policy(POLICY), check_interval=0),
        record,
        MemoryStore(),
        clock=lambda: NOW,
        decision_log=log,
    )
    for orcid in (RESEARCHER, OTHER):
        for dataset in ("sail", "open"):
            checker.check(orcid, dataset)
    checker.reader = NoOrcid()
    assert record.reads == 4 and len(log) == 4
    return log, checker.policy


def candidate(write_policy, old, new):
    assert old in POLICY
    return load_policy(write_policy(POLICY.replace(old, new), name="candidate.yaml"))


class TestImpactPreview:
    def test_trusting_self_asserted_gcp_lets_the_researcher_in(self, logged, write_policy):
        log, current = logged
        new = candidate(
            write_policy, "    sources: [nihr]\n", "    sources: [nihr, self-asserted]\n"
        )
        impact = preview(log.entries(), current, new, NOW)
        assert impact.replayed == 4
        [change] = impact.changes
        assert (change.orcid, change.dataset, change.before, change.after) == (
            RESEARCHER,
            "sail",
            "deny",
            "allow",
        )
        [why] = change.requirements
        assert why.requirement == "any of: gcp, hsr"
        assert (why.before, why.after) == ("not met", "met")
        assert why.detail == 'now met by put-code 2 "Good Clinical Practice"'

    def test_a_new_requirement_shows_who_loses_access_and_why(self, logged, write_policy):
        log, current = logged
        new = candidate(
            write_policy,
            "require: [safe-researcher, {any_of: [gcp, hsr]}]",
            "require: [safe-researcher, {any_of: [gcp, hsr]}, recent]",
        )
        impact = preview(log.entries(), current, new, NOW)
        [change] = impact.changes
        assert (change.orcid, change.before, change.after) == (OTHER, "allow", "deny")
        assert change.requirements[0].requirement == "recent"
        assert change.requirements[0].before == "absent"
        assert change.requirements[0].reasons == ("missing",)
        assert impact.lost == 1 and impact.gained == 0

    def test_an_item_no_rule_wanted_is_replayed_from_its_summary(self, logged, write_policy):
        log, current = logged
        new = candidate(
            write_policy,
            "    title: Data Protection Essentials\n",
            "    title: Statistics for Everyone\n",
        )
        [change] = preview(log.entries(), current, new, NOW).changes
        assert (change.orcid, change.dataset, change.before, change.after) == (
            RESEARCHER,
            "open",
            "deny",
            "allow",
        )
        assert "put-code 4" in change.requirements[0].detail
        assert "judged on the summary" in change.requirements[0].detail

    def test_the_same_policy_changes_nothing(self, logged):
        log, current = logged
        impact = preview(log.entries(), current, current, NOW)
        assert impact.changes == () and impact.replayed == 4

    def test_both_sides_are_judged_at_the_same_moment(self, logged, write_policy):
        """A qualification that lapsed since it was logged is no change of policy's doing."""
        log, current = logged
        new = candidate(write_policy, "    max_age_days: 365\n", "    max_age_days: 366\n")
        later = NOW + dt.timedelta(days=3650)
        assert preview(log.entries(), current, new, later).changes == ()

    def test_a_removed_dataset_lists_only_those_who_lose_access(self, logged, write_policy):
        log, current = logged
        new = load_policy(
            write_policy(
                POLICY.replace(POLICY[POLICY.index("  sail:\n") : POLICY.index("  open:\n")], ""),
                name="without-sail.yaml",
            )
        )
        [change] = preview(log.entries(), current, new, NOW).changes
        assert (change.orcid, change.dataset, change.before, change.after) == (
            OTHER,
            "sail",
            "allow",
            None,
        )
        assert change.requirements == ()

    def test_the_newest_decision_of_each_pair_is_replayed(self, logged, write_policy):
        log, current = logged
        entries = log.entries(orcid=RESEARCHER, dataset="sail")
        assert len(entries) == 1
        # Log the same pair again, now with the gcp item from NIHR: the newest wins.
        items = [item(1, "Safe Researcher Training", UKDS), item(2, "Good Clinical Practice", NIHR)]
        record = Record({RESEARCHER: items})
        checker = AccessChecker(
            PolicyFile(write_policy(POLICY), check_interval=0),
            record,
            MemoryStore(),
            clock=lambda: NOW,
            decision_log=log,
        )
        checker.check(RESEARCHER, "sail")
        new = candidate(
            write_policy, "    sources: [nihr]\n", "    sources: [nihr, self-asserted]\n"
        )
        assert preview(log.entries(), current, new, NOW).changes == ()


def test_the_replay_and_the_diff_import_no_redis_flask_or_requests():
    import subprocess
    import sys

    code = (
        "import sys, app.impact, app.policy.diff\n"
        "print(sorted(m for m in ('flask', 'redis', 'requests') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
