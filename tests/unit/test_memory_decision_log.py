"""The decision log kept in the process (no Redis): filters, latest per pair, bounds."""

import datetime as dt

import pytest

from app.decision import decide, refuse_unreadable
from app.decision_log import LogEntry, MemoryDecisionLog
from app.errors import RecordLocked
from app.impact import preview
from app.qualifications import read_item
from tests import orcid_json
from tests.conftest import NIHR, RESEARCHER, UKDS, at

OTHER = "0000-0001-5109-3700"


class Clock:
    def __init__(self, start: float = 1_790_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now


def entry(policy, orcid=RESEARCHER, dataset="sail", allowed=True, error=None, day="2026-11-25"):
    target = policy.dataset(dataset)
    if error is not None:
        decision = refuse_unreadable(policy, target, orcid=orcid, error=error, now=at(day))
        return LogEntry(decision)
    items = [
        orcid_json.qualification(
            1,
            owner=orcid,
            title="Safe Researcher Training",
            src=orcid_json.source(client_id=UKDS),
            end="2026-12-10",
        ),
    ]
    if allowed:
        items.append(
            orcid_json.qualification(
                2,
                owner=orcid,
                title="Good Clinical Practice",
                src=orcid_json.source(client_id=NIHR),
            )
        )
    parsed = tuple(read_item(i) for i in items)
    return LogEntry(decide(policy, target, list(parsed), orcid=orcid, now=at(day)), parsed)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def log(policy, clock):
    log = MemoryDecisionLog(max_entries=100, retention_days=30, clock=clock)
    for orcid, dataset, allowed in [
        (RESEARCHER, "sail", False),
        (RESEARCHER, "sail", True),
        (OTHER, "sail", True),
        (OTHER, "open", False),
    ]:
        log.append(entry(policy, orcid, dataset, allowed))
        clock.now += 60
    log.append(entry(policy, OTHER, "sail", error=RecordLocked()))
    return log


class TestMemoryDecisionLog:
    def test_entries_come_newest_first_with_ids_in_order(self, log):
        found = log.entries()
        assert [(e.orcid, e.dataset, e.outcome) for e in found] == [
            (OTHER, "sail", "error"),
            (OTHER, "open", "deny"),
            (OTHER, "sail", "allow"),
            (RESEARCHER, "sail", "allow"),
            (RESEARCHER, "sail", "deny"),
        ]
        ids = [e.id for e in found]
        assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))), reverse=True)

    @pytest.mark.parametrize(
        "filters, expected",
        [
            ({"orcid": RESEARCHER}, 2),
            ({"dataset": "open"}, 1),
            ({"outcome": "allow"}, 2),
            ({"outcome": "error"}, 1),
            ({"orcid": OTHER, "dataset": "sail", "outcome": "allow"}, 1),
            ({"limit": 3}, 3),
        ],
        ids=["orcid", "dataset", "allow", "error", "all-three", "limit"],
    )
    def test_filters(self, log, filters, expected):
        assert len(log.entries(**filters)) == expected

    def test_since_counts_from_when_the_entry_was_logged(self, log, clock):
        since = dt.datetime.fromtimestamp(clock.now - 90, dt.UTC)
        assert [e.outcome for e in log.entries(since=since)] == ["error", "deny"]

    def test_latest_is_one_per_researcher_and_dataset(self, log):
        latest = log.latest()
        assert [(e.orcid, e.dataset, e.outcome) for e in latest] == [
            (OTHER, "sail", "error"),
            (OTHER, "open", "deny"),
            (RESEARCHER, "sail", "allow"),
        ]
        readable = log.latest(readable=True)
        assert (OTHER, "sail", "allow") in [(e.orcid, e.dataset, e.outcome) for e in readable]

    def test_the_log_is_bounded(self, policy, clock):
        log = MemoryDecisionLog(max_entries=3, clock=clock)
        for _ in range(5):
            log.append(entry(policy))
        assert len(log) == 3 and len(log.entries()) == 3

    def test_entries_past_the_retention_are_gone(self, log, clock, policy):
        clock.now += 31 * 86400
        assert log.entries() == []
        log.append(entry(policy))
        assert len(log) == 1

    def test_an_entry_reports_what_the_decision_says(self, log):
        newest_allow = log.entries(outcome="allow", orcid=RESEARCHER)[0]
        summary = newest_allow.summary()
        assert {k: summary[k] for k in ("orcid", "dataset", "allowed", "reasons")} == {
            "orcid": RESEARCHER,
            "dataset": "sail",
            "allowed": True,
            "reasons": [],
        }
        assert summary["decided_at"] == "2026-11-25T12:00:00+00:00"
        assert newest_allow.expiring() == [
            (dt.date(2026, 12, 10), "safe-researcher", 1, "Safe Researcher Training")
        ]
        refused = log.entries(outcome="deny", orcid=RESEARCHER)[0]
        assert refused.reasons == ["missing"] and refused.expiring() == []

    def test_an_entry_survives_its_json(self, log):
        for logged in log.entries():
            assert LogEntry.from_dict(logged.to_dict(), id=logged.id) == logged

    def test_a_pair_never_read_is_reported_as_unreplayable(self, policy):
        log = MemoryDecisionLog()
        log.append(entry(policy, OTHER, "open", error=RecordLocked()))
        impact = preview(log.entries(), policy, policy, at("2026-11-25"))
        assert impact.replayed == 0 and impact.unreplayable == ((OTHER, "open"),)


def test_a_read_looks_at_no_more_than_its_cap(policy, log):
    # A steward's page must not parse a researcher's whole flood of decisions; the
    # command line, which no proxy waits on, reads them all (cap=None).
    before = len(log.entries(cap=None))
    for n in range(8):
        log.append(entry(policy, orcid=f"0000-0000-0000-{n:04d}"[:19]))
    assert len(log.entries(cap=5)) == 5
    assert len(log.entries(limit=100, cap=5)) == 5
    assert len(log.latest(cap=5)) == 5  # one per researcher, of the newest five
    assert len(log.entries(cap=None)) == before + 8
    assert len(list(log.scan())) == before + 8  # a preview's: one at a time, not capped


def test_the_replay_of_a_decision_read_without_its_items_is_refused(policy):
    import dataclasses

    from app.impact import replay

    partial = dataclasses.replace(entry(policy), partial=True)
    assert not partial.is_replayable and partial.record_was_read
    with pytest.raises(ValueError, match="without its items"):
        replay(policy, partial, at("2026-11-25"))
