import datetime as dt
import json

import pytest

from app.decision import Decision, decide, refuse_unreadable
from app.errors import RecordLocked
from app.explain import explain_lines
from tests import orcid_json
from tests.conftest import NIHR, OWN_CLIENT, PORTAL, RESEARCHER, UKDS, at

OTHER_PERSON = "0000-0001-5109-3700"
UNTRUSTED = "APP-UNTRUSTED0000001"


def judge(policy, dataset, items, now="2026-11-25", own_client_id=OWN_CLIENT):
    return decide(
        policy,
        policy.dataset(dataset),
        items,
        orcid=RESEARCHER,
        now=at(now),
        own_client_id=own_client_id,
    )


def srt(make_qualification, put_code=1, **kwargs):
    kwargs.setdefault("src", orcid_json.source(client_id=UKDS, name="UK Data Service"))
    return make_qualification(put_code, title="Safe Researcher Training", **kwargs)


def gcp(make_qualification, put_code=2, **kwargs):
    kwargs.setdefault("src", orcid_json.source(client_id=NIHR, name="NIHR Learn"))
    return make_qualification(put_code, title="Good Clinical Practice", **kwargs)


class TestSources:
    @pytest.mark.parametrize(
        "src, allowed, added_by",
        [
            (orcid_json.source(client_id=UKDS, name="UK Data Service"), True, "UK Data Service"),
            (orcid_json.source(client_id=OWN_CLIENT, name="Gatekeeper"), True, "this service"),
            (orcid_json.source(orcid=RESEARCHER, name="Me"), False, "yourself"),
            # Search-and-link import by a trusted client is still the researcher's claim.
            (orcid_json.source(client_id=UKDS, origin_orcid=RESEARCHER), False, "yourself"),
            (
                orcid_json.source(client_id=UNTRUSTED, name="UK Data Service"),
                False,
                '"UK Data Service" (ORCID client APP-UNTRUSTED0000001)',
            ),
            (orcid_json.source(orcid=OTHER_PERSON), False, f"ORCID user {OTHER_PERSON}"),
            (orcid_json.source(client_id=NIHR, name="NIHR Learn"), False, "NIHR Learn"),
            (orcid_json.source(), False, "an unknown source"),
        ],
        ids=[
            "trusted-client",
            "self-issued",
            "self-asserted",
            "search-and-link",
            "untrusted-client-with-trusted-name",
            "another-person",
            "trusted-elsewhere",
            "no-source",
        ],
    )
    def test_only_the_sources_the_rule_names_are_trusted(
        self, policy, make_qualification, src, allowed, added_by
    ):
        decision = judge(
            policy, "sail", [srt(make_qualification, src=src), gcp(make_qualification)]
        )
        assert decision.allowed is allowed
        [verdict] = decision.requirements[0].candidates
        assert verdict.added_by == added_by
        if not allowed:
            assert [f.reason for f in verdict.failures] == ["wrong_source"]
            assert verdict.failures[0].message.endswith(
                "this dataset needs it from UK Data Service or this service"
            )

    def test_self_issued_needs_our_client_id_configured(self, policy, make_qualification):
        item = srt(make_qualification, src=orcid_json.source(client_id=OWN_CLIENT))
        decision = judge(policy, "sail", [item, gcp(make_qualification)], own_client_id=None)
        assert not decision.allowed

    def test_self_asserted_counts_where_the_rule_allows_it(self, policy, make_qualification):
        mine = make_qualification(
            3,
            title="x",
            src=orcid_json.source(orcid=RESEARCHER),
            external_ids=[("uri", "https://example.org/quals/hsr")],
        )
        decision = judge(policy, "sail", [srt(make_qualification), mine])
        assert decision.allowed
        assert decision.requirements[1].put_code == 3
        assert decision.requirements[1].qualification == "hsr"

    @pytest.mark.parametrize(
        "writer, origin, allowed",
        [(PORTAL, NIHR, True), (PORTAL, UNTRUSTED, False), (UNTRUSTED, NIHR, False)],
        ids=["both-trusted", "origin-untrusted", "writer-untrusted"],
    )
    def test_item_written_on_behalf_of_another_client_needs_both_trusted(
        self, policy, make_qualification, writer, origin, allowed
    ):
        item = gcp(
            make_qualification, src=orcid_json.source(client_id=writer, origin_client_id=origin)
        )
        assert judge(policy, "sail", [srt(make_qualification), item]).allowed is allowed


class TestDates:
    @pytest.mark.parametrize(
        "start, end, today, reasons",
        [
            (None, "2026-11-25", "2026-11-25", []),  # valid on its end date
            (None, "2026-11-24", "2026-11-25", ["expired"]),
            (None, "2026-11", "2026-11-30", []),  # partial end: through the month's last day
            (None, "2026-11", "2026-12-01", ["expired"]),
            (None, "2026", "2026-12-31", []),
            (None, "2024-02", "2024-02-29", []),  # leap year
            (None, "2023-02", "2023-03-01", ["expired"]),
            ("2026-11-25", None, "2026-11-25", []),  # valid from its start date
            ("2026-11-26", None, "2026-11-25", ["not_yet_valid"]),
            ("2026-12", None, "2026-11-30", ["not_yet_valid"]),
            ("2026-12", None, "2026-12-01", []),
            ("2027", "2025", "2026-06-01", ["not_yet_valid", "expired"]),
            (None, None, "2026-11-25", []),  # no end: no expiry
        ],
    )
    def test_validity_window_is_inclusive_and_partial_dates_cover_their_span(
        self, policy, make_qualification, start, end, today, reasons
    ):
        item = srt(make_qualification, start=start, end=end)
        decision = judge(policy, "sail", [item, gcp(make_qualification)], now=today)
        verdict = decision.requirements[0].candidates[0]
        assert [f.reason for f in verdict.failures] == reasons
        assert decision.allowed is (reasons == [])

    def test_expired_reason_names_the_last_valid_day(self, policy, make_qualification):
        item = srt(make_qualification, end="2025-06")
        decision = judge(policy, "sail", [item, gcp(make_qualification)])
        assert decision.requirements[0].candidates[0].failures[0].message == (
            "it expired on 2025-06-30"
        )

    @pytest.mark.parametrize(
        "start, created_ms, today, reason",
        [
            ("2025-11-25", None, "2026-11-25", None),  # 365 days later: still valid
            ("2025-11-25", None, "2026-11-26", "too_old"),
            ("2024-02-29", None, "2025-02-28", None),  # across a leap day
            ("2024-02-29", None, "2025-03-01", "too_old"),
            ("2025", None, "2026-01-01", None),  # partial start counts from its first day
            ("2025", None, "2026-01-02", "too_old"),
            (None, 1764028800000, "2026-11-25", None),  # created 2025-11-25, no start
            (None, 1764028800000, "2026-11-26", "too_old"),
        ],
    )
    def test_max_age_counts_from_start_else_created(
        self, policy, make_qualification, start, created_ms, today, reason
    ):
        kwargs = {"created_ms": created_ms} if created_ms else {}
        item = make_qualification(
            9,
            title="Data Protection Essentials",
            start=start,
            src=orcid_json.source(orcid=RESEARCHER),
            **kwargs,
        )
        decision = judge(policy, "open", [item], now=today)
        reasons = [f.reason for f in decision.requirements[0].candidates[0].failures]
        assert reasons == ([reason] if reason else [])

    def test_max_age_without_any_date_is_refused(self, policy, make_qualification):
        item = make_qualification(
            9, title="Data Protection Essentials", src=orcid_json.source(orcid=RESEARCHER)
        )
        item = type(item)(**{**{f: getattr(item, f) for f in item.__slots__}, "created": None})
        decision = judge(policy, "open", [item])
        assert decision.requirements[0].candidates[0].failures[0].reason == "age_unknown"


class TestOtherChecks:
    def test_organization_mismatch_is_explained(self, policy, make_qualification):
        item = srt(make_qualification, org_name="Elsewhere", org_id="https://ror.org/000000000")
        decision = judge(policy, "sail", [item, gcp(make_qualification)])
        [failure] = decision.requirements[0].candidates[0].failures
        assert failure.reason == "organization_mismatch"
        assert "Elsewhere" in failure.message and "https://ror.org/05x6aa123" in failure.message

    def test_missing_organization_is_a_mismatch_not_a_crash(self, policy, make_qualification):
        item = srt(make_qualification, no_organization=True)
        decision = judge(policy, "sail", [item, gcp(make_qualification)])
        assert decision.requirements[0].candidates[0].failures[0].reason == "organization_mismatch"

    @pytest.mark.parametrize(
        "url, external_ids, reasons",
        [
            ("https://example.org/certs/1", [("other-id", "CERT-1")], []),
            ("https://evil.example/certs/1", [("other-id", "CERT-1")], ["url_mismatch"]),
            (None, [("other-id", "CERT-1")], ["url_mismatch"]),
            ("https://example.org/certs/1", [("other-id", "CERT-2")], ["external_id_mismatch"]),
        ],
    )
    def test_url_prefix_and_persistent_id_are_checked(
        self, policy, make_qualification, url, external_ids, reasons
    ):
        item = make_qualification(
            5,
            title="Certified Course",
            url=url,
            external_ids=external_ids,
            src=orcid_json.source(orcid=RESEARCHER),
        )
        decision = judge(policy, "certs", [item])
        assert [f.reason for f in decision.requirements[0].candidates[0].failures] == reasons

    def test_every_failure_of_an_item_is_kept(self, policy, make_qualification):
        item = srt(
            make_qualification,
            src=orcid_json.source(orcid=RESEARCHER),
            org_id="https://ror.org/000000000",
            end="2020",
        )
        decision = judge(policy, "sail", [item])
        reasons = [f.reason for f in decision.requirements[0].candidates[0].failures]
        assert reasons == ["organization_mismatch", "wrong_source", "expired"]


class TestRequirements:
    def test_any_of_is_met_by_either_option(self, policy, make_qualification):
        hsr = make_qualification(
            4,
            title="HSR",
            src=orcid_json.source(client_id=NIHR),
            external_ids=[("uri", "https://example.org/quals/hsr")],
        )
        assert judge(policy, "sail", [srt(make_qualification), hsr]).allowed
        assert judge(policy, "sail", [srt(make_qualification), gcp(make_qualification)]).allowed
        assert not judge(policy, "sail", [srt(make_qualification)]).allowed

    def test_all_requirements_are_needed(self, policy, make_qualification):
        decision = judge(policy, "sail", [gcp(make_qualification)])
        assert not decision.allowed
        assert [r.met for r in decision.requirements] == [False, True]
        assert decision.requirements[0].candidates == ()

    def test_the_longest_lasting_valid_item_is_used(self, policy, make_qualification):
        short = srt(make_qualification, 1, end="2027-01-31")
        long = srt(make_qualification, 2, end="2028-06")
        decision = judge(policy, "sail", [short, long, gcp(make_qualification)])
        assert decision.requirements[0].put_code == 2
        assert decision.requirements[0].valid_until == dt.date(2028, 6, 30)

    def test_an_empty_record_is_refused(self, policy):
        assert not judge(policy, "sail", []).allowed


class TestValidUntil:
    def test_allow_holds_until_the_earliest_end_capped_by_cache_ttl(
        self, policy, make_qualification
    ):
        item = srt(make_qualification, end="2026-11-25")
        decision = judge(policy, "sail", [item, gcp(make_qualification)])
        # cache_ttl 900 s from noon comes before the end of the day
        assert decision.valid_until == at("2026-11-25") + dt.timedelta(seconds=900)

    def test_allow_ends_at_midnight_after_the_last_valid_day(self, policy, make_qualification):
        item = make_qualification(
            9,
            title="Data Protection Essentials",
            start="2026-01-10",
            src=orcid_json.source(orcid=RESEARCHER),
        )
        decision = judge(policy, "open", [item])  # max_age 365: last day 2027-01-10
        assert decision.valid_until == dt.datetime(2027, 1, 11, tzinfo=dt.UTC)

    def test_allow_without_any_end_or_ttl_has_no_end(self, policy, make_qualification):
        item = make_qualification(
            5,
            title="Certified Course",
            url="https://example.org/certs/1",
            external_ids=[("other-id", "CERT-1")],
            src=orcid_json.source(orcid=RESEARCHER),
        )
        assert judge(policy, "certs", [item]).valid_until is None

    def test_refusal_ends_when_a_pending_item_starts(self, policy, make_qualification):
        item = make_qualification(
            9,
            title="Data Protection Essentials",
            start="2026-12-01",
            src=orcid_json.source(orcid=RESEARCHER),
        )
        decision = judge(policy, "open", [item])
        assert not decision.allowed
        assert decision.valid_until == dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


class TestSerialisation:
    def test_decision_round_trips_through_json(self, policy, make_qualification):
        items = [
            srt(make_qualification, end="2027-03"),
            gcp(make_qualification, src=orcid_json.source(orcid=RESEARCHER)),
        ]
        decision = judge(policy, "sail", items)
        again = Decision.from_dict(json.loads(json.dumps(decision.to_dict())))
        assert again == decision

    def test_json_has_the_contract_fields(self, policy, make_qualification):
        data = judge(policy, "sail", [srt(make_qualification)]).to_dict()
        assert {
            "allowed",
            "orcid",
            "dataset",
            "requirements",
            "valid_until",
            "policy_version",
            "decided_at",
        } <= set(data)
        requirement = data["requirements"][0]
        assert requirement["met"] is True and requirement["put_code"] == 1
        assert data["requirements"][1]["candidates"] == []

    def test_unreadable_record_is_a_refusal_with_the_reason(self, policy):
        decision = refuse_unreadable(
            policy,
            policy.dataset("sail"),
            orcid=RESEARCHER,
            error=RecordLocked(),
            now=at("2026-11-25"),
        )
        assert not decision.allowed
        assert decision.error.reason == "record_locked"
        assert Decision.from_dict(decision.to_dict()) == decision


class TestExplain:
    def test_refusal_says_why_and_what_to_do(self, policy, make_qualification):
        items = [
            srt(make_qualification, end="2025-06"),
            gcp(make_qualification, src=orcid_json.source(orcid=RESEARCHER)),
        ]
        text = "\n".join(explain_lines(policy, judge(policy, "sail", items)))
        assert f'{RESEARCHER} may not open "SAIL cohort extract" (sail).' in text
        assert "it expired on 2025-06-30" in text
        assert "added by yourself; this dataset needs it from NIHR Learn" in text
        assert 'renew "Safe Researcher Training"' in text

    def test_allow_names_the_item_used(self, policy, make_qualification):
        text = "\n".join(
            explain_lines(
                policy, judge(policy, "sail", [srt(make_qualification), gcp(make_qualification)])
            )
        )
        assert "may open" in text and "put-code 1" in text and "added by UK Data Service" in text

    def test_unreadable_record_is_explained(self, policy):
        decision = refuse_unreadable(
            policy,
            policy.dataset("sail"),
            orcid=RESEARCHER,
            error=RecordLocked(),
            now=at("2026-11-25"),
        )
        text = "\n".join(explain_lines(policy, decision))
        assert "Your ORCID record is locked" in text


class TestSelfAssertedTakesAnyIdentifiedSource:
    """``self-asserted`` is the weakest evidence: any source ORCID identifies is as good."""

    def dpe(self, make_qualification, src):
        return make_qualification(1, title="Data Protection Essentials", start="2026-06", src=src)

    @pytest.mark.parametrize(
        "src, added_by",
        [
            (orcid_json.source(orcid=RESEARCHER), "yourself"),
            (orcid_json.source(client_id=UKDS, name="UK Data Service"), "UK Data Service"),
            (
                orcid_json.source(client_id=UNTRUSTED, name="Some LMS"),
                '"Some LMS" (ORCID client APP-UNTRUSTED0000001)',
            ),
            (orcid_json.source(orcid=OTHER_PERSON), f"ORCID user {OTHER_PERSON}"),
            (orcid_json.source(client_id=UKDS, origin_orcid=RESEARCHER), "yourself"),
            (orcid_json.source(client_id=OWN_CLIENT), "this service"),
        ],
        ids=[
            "researcher",
            "trusted-client",
            "other-client",
            "delegate",
            "search-and-link",
            "this-service",
        ],
    )
    def test_an_item_from_any_identified_source_counts(
        self, policy, make_qualification, src, added_by
    ):
        decision = judge(policy, "open", [self.dpe(make_qualification, src)])
        assert decision.allowed
        [verdict] = decision.requirements[0].candidates
        assert (verdict.ok, verdict.added_by) == (True, added_by)

    def test_an_item_whose_source_orcid_left_unknown_still_counts_for_nobody(
        self, policy, make_qualification
    ):
        decision = judge(policy, "open", [self.dpe(make_qualification, orcid_json.source())])
        assert not decision.allowed
        [failure] = decision.requirements[0].candidates[0].failures
        assert failure.reason == "wrong_source"
        assert failure.message == (
            "ORCID did not say clearly who added it, so it counts for nobody; this dataset "
            "needs it from anyone ORCID names as its source, yourself included"
        )

    def test_a_provider_added_item_is_never_told_it_needs_to_come_from_yourself(
        self, policy, make_qualification
    ):
        # hsr takes [nihr, self-asserted]: an item from an untrusted client now counts.
        hsr = make_qualification(
            2,
            title="Health services research",
            external_ids=[("uri", "https://example.org/quals/hsr")],
            src=orcid_json.source(client_id=UNTRUSTED),
        )
        decision = judge(policy, "sail", [srt(make_qualification), hsr])
        assert decision.allowed
        assert "needs it from yourself" not in "\n".join(explain_lines(policy, decision))

    def test_rules_without_self_asserted_still_name_their_sources(self, policy, make_qualification):
        item = srt(make_qualification, src=orcid_json.source(client_id=UNTRUSTED))
        [verdict] = judge(policy, "sail", [item]).requirements[0].candidates
        assert verdict.failures[0].message.endswith(
            "this dataset needs it from UK Data Service or this service"
        )
