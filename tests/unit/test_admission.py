"""The budget of a cold check: when it must be answered, and whether a read may start."""

import pytest

from app.admission import FINISH, SLACK, Budget, arrival


class TestBudget:
    def test_a_check_is_answered_within_orcid_timeout_and_a_second_of_arriving(self):
        budget = Budget.from_arrival(100.0, orcid_timeout=8.0)
        assert budget.answer_by == 109.0
        assert budget.read_by == pytest.approx(109.0 - FINISH)

    @pytest.mark.parametrize("orcid_timeout", [0.5, 2.0, 8.0, 30.0])
    def test_a_read_started_at_the_last_start_ends_by_its_read_by(self, orcid_timeout):
        budget = Budget.from_arrival(100.0, orcid_timeout)
        assert budget.last_start + orcid_timeout == pytest.approx(budget.read_by)
        assert budget.last_start == pytest.approx(100.0 + SLACK - FINISH)

    @pytest.mark.parametrize(
        ("waited", "admitted"),
        [(0.0, True), (0.69, True), (SLACK - FINISH, True), (0.71, False), (5.0, False)],
        ids=["at-once", "just-in-time", "at-the-last-start", "just-late", "long-queued"],
    )
    def test_a_cold_decision_starts_only_while_a_whole_read_fits(self, waited, admitted):
        budget = Budget.from_arrival(100.0, orcid_timeout=8.0)
        assert budget.admits(100.0 + waited) is admitted

    @pytest.mark.parametrize(
        ("now", "expected"),
        [(100.0, 0.5), (100.5, 0.2), (100.7, 0.0), (103.0, 0.0)],
        ids=["fresh: the whole wait", "queued: up to the last start", "at it", "past it"],
    )
    def test_the_wait_for_a_slot_never_passes_the_last_start(self, now, expected):
        budget = Budget.from_arrival(100.0, orcid_timeout=8.0)
        assert budget.may_wait(now, most=0.5) == pytest.approx(expected)

    def test_a_wait_for_anothers_read_ends_by_the_read_by(self):
        budget = Budget.from_arrival(100.0, orcid_timeout=8.0)
        assert budget.left(108.0) == pytest.approx(0.7)
        assert budget.left(110.0) == 0.0


class TestArrival:
    @pytest.mark.parametrize(
        ("queued", "expected"),
        [(None, 10.0), (3.0, 9.0), (1.0, 10.0), (0.0, 10.0)],
        ids=["kernel-silent", "queued-before-the-call", "within-the-call", "just-now"],
    )
    def test_the_earlier_of_the_call_and_the_kernels_word_counts(self, queued, expected):
        assert arrival(started=10.0, now=12.0, queued=queued) == expected
