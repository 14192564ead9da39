"""Shapes ORCID's schema allows that a lenient reader could turn into a wrongful allow.

Each test builds the JSON ORCID could send (common-3.0.xsd, qualification-3.0.xsd),
parses it as the reader does and judges it: the answer must be a refusal, or the item
must be read for exactly what it says.
"""

import datetime as dt

import pytest

from app.decision import decide
from app.explain import explain_lines
from app.policy import load_policy
from app.qualifications import UnreadableItem, read_item
from tests import orcid_json
from tests.conftest import NIHR, OWN_CLIENT, RESEARCHER, UKDS, at

OTHER_PERSON = "0000-0001-5109-3700"
LEGACY_CLIENT = "0000-0002-1694-233X"  # an iD-shaped client ID, check digit X


def judge(policy, dataset, items, now="2026-11-25"):
    return decide(
        policy,
        policy.dataset(dataset),
        [read_item(item) for item in items],
        orcid=RESEARCHER,
        now=at(now),
        own_client_id=OWN_CLIENT,
    )


def srt(put_code=1, **kwargs):
    kwargs.setdefault("src", orcid_json.source(client_id=UKDS, name="UK Data Service"))
    return orcid_json.qualification(
        put_code, owner=RESEARCHER, title="Safe Researcher Training", **kwargs
    )


def gcp(put_code=2, **kwargs):
    kwargs.setdefault("src", orcid_json.source(client_id=NIHR, name="NIHR Learn"))
    return orcid_json.qualification(
        put_code, owner=RESEARCHER, title="Good Clinical Practice", **kwargs
    )


def reasons(decision, requirement=0):
    return {f.reason for c in decision.requirements[requirement].candidates for f in c.failures}


class TestBaseline:
    def test_the_trusted_valid_pair_is_allowed(self, policy):
        # Every refusal below differs from this allow by one shape only.
        assert judge(policy, "sail", [srt(), gcp()]).allowed


class TestYearlessDates:
    @pytest.mark.parametrize("which", ["start-date", "end-date"])
    @pytest.mark.parametrize(
        "date",
        [
            {"year": None, "month": {"value": "01"}, "day": None},
            {"year": None, "month": {"value": "01"}, "day": {"value": "01"}},
            {"month": {"value": "01"}},
        ],
        ids=["month", "month-and-day", "year-missing"],
    )
    def test_a_month_without_a_year_refuses_never_reads_as_no_date(self, policy, which, date):
        item = srt()
        item[which] = date
        decision = judge(policy, "sail", [item, gcp()])
        assert not decision.allowed
        assert reasons(decision) == {"unreadable_item"}

    def test_an_end_date_in_arabic_indic_digits_refuses(self, policy):
        item = srt(end="2030-01-01")
        item["end-date"]["year"] = {"value": "٢٠٣٠"}
        assert not judge(policy, "sail", [item, gcp()]).allowed


class TestSourceReferences:
    @staticmethod
    def uri_only(reference):
        return {"uri": reference["uri"], "path": None, "host": None}

    def test_a_client_named_only_by_uri_is_that_client(self, policy):
        src = orcid_json.source(client_id=UKDS)
        src["source-client-id"] = self.uri_only(src["source-client-id"])
        item = read_item(srt(src=src))
        assert item.source.source_client_id == UKDS and not item.source.unknown
        assert judge(policy, "sail", [srt(src=src), gcp()]).allowed

    def test_an_assertion_origin_named_only_by_uri_is_never_dropped(self, policy):
        # A search-and-link import by a trusted client: the researcher's own claim. Dropping
        # the uri-only origin would read it as the trusted client's.
        src = orcid_json.source(client_id=UKDS, origin_orcid=RESEARCHER)
        src["assertion-origin-orcid"] = self.uri_only(src["assertion-origin-orcid"])
        decision = judge(policy, "sail", [srt(src=src), gcp()])
        assert not decision.allowed
        assert decision.requirements[0].candidates[0].added_by == "yourself"

    def test_a_uri_only_origin_of_another_person_is_not_the_trusted_client(self, policy):
        src = orcid_json.source(client_id=UKDS, origin_orcid=OTHER_PERSON)
        src["assertion-origin-orcid"] = self.uri_only(src["assertion-origin-orcid"])
        decision = judge(policy, "sail", [srt(src=src), gcp()])
        assert not decision.allowed
        added_by = decision.requirements[0].candidates[0].added_by
        assert added_by == f"UK Data Service on behalf of ORCID user {OTHER_PERSON}"

    @pytest.mark.parametrize(
        "reference",
        [
            {"uri": None, "path": None, "host": "orcid.org"},
            {},
            {"uri": "https://orcid.org/client/", "path": None, "host": "orcid.org"},
            {"uri": "https://orcid.org/client/APP-NOTACLIENTID", "path": None},
            {"uri": "urn:orcid:0000-0002-1825-0097", "path": None},
            {"uri": "https://orcid.org/0000-0002-1825-0098", "path": None},  # bad check digit
            {"uri": "https://orcid.org/0000-0001-5109-3700", "path": "0000-0002-1825-0097"},
            {"uri": None, "path": 1234},
            {"uri": None, "path": "0000-0002-1825-0097 "},
        ],
        ids=[
            "host-only",
            "empty",
            "no-last-segment",
            "not-a-client-id",
            "not-a-url",
            "bad-checksum",
            "uri-and-path-disagree",
            "path-a-number",
            "padded-path",
        ],
    )
    def test_an_origin_that_names_nobody_makes_the_source_unknown(self, policy, reference):
        src = orcid_json.source(client_id=UKDS)
        src["assertion-origin-orcid"] = reference
        item = read_item(srt(src=src))
        assert item.source.unknown
        decision = judge(policy, "sail", [srt(src=src), gcp()])
        assert not decision.allowed
        [candidate] = decision.requirements[0].candidates
        assert candidate.added_by == "an unknown source"
        assert [f.reason for f in candidate.failures] == ["wrong_source"]

    def test_an_unidentifiable_writer_is_unknown_even_with_a_trusted_name(self, policy):
        src = orcid_json.source(name="UK Data Service")
        src["source-client-id"] = {"uri": None, "path": "APP-UKDS", "host": "orcid.org"}
        assert not judge(policy, "sail", [srt(src=src), gcp()]).allowed

    @pytest.mark.parametrize(
        "pair",
        [
            ("source-orcid", "source-client-id"),
            ("assertion-origin-orcid", "assertion-origin-client-id"),
        ],
        ids=["source", "assertion-origin"],
    )
    def test_both_sides_of_an_xsd_choice_make_the_source_unknown(self, policy, pair):
        src = orcid_json.source(client_id=UKDS)
        src[pair[0]] = orcid_json.person(RESEARCHER)
        src[pair[1]] = orcid_json.client(UKDS)
        assert read_item(srt(src=src)).source.unknown
        assert not judge(policy, "sail", [srt(src=src), gcp()]).allowed

    def test_an_item_with_no_source_counts_for_nobody(self, policy):
        item = srt()
        item["source"] = None
        assert not judge(policy, "sail", [item, gcp()]).allowed


class TestLegacyClients:
    POLICY = f"""
    version: 1
    sources:
      old-lms:
        name: Old LMS
        client_ids: [{LEGACY_CLIENT}]
    qualifications:
      srt:
        title: Safe Researcher Training
        sources: [old-lms]
    datasets:
      d:
        paths: [/d/]
        require: [srt]
    """

    # ORCID's server files the calling client under source-client-id, legacy ones too
    # (common-3.0.xsd client-path takes the iD shape); older items have it as source-orcid.
    @pytest.mark.parametrize("where", ["orcid", "client_id"])
    def test_a_legacy_client_matches_its_listed_id(self, write_policy, where):
        policy = load_policy(write_policy(self.POLICY))
        item = srt(src=orcid_json.source(**{where: LEGACY_CLIENT}))
        decision = judge(policy, "d", [item])
        assert decision.allowed
        assert decision.requirements[0].candidates[0].added_by == "Old LMS"

    def test_an_id_shaped_client_with_a_wrong_check_digit_is_an_unknown_source(self, write_policy):
        policy = load_policy(write_policy(self.POLICY))
        item = srt(src=orcid_json.source(client_id=LEGACY_CLIENT[:-1] + "0"))
        decision = judge(policy, "d", [item])
        assert not decision.allowed
        assert decision.requirements[0].candidates[0].added_by == "an unknown source"

    def test_the_researcher_is_never_a_legacy_client(self, write_policy):
        policy = load_policy(write_policy(self.POLICY.replace(LEGACY_CLIENT, RESEARCHER)))
        item = srt(src=orcid_json.source(orcid=RESEARCHER))
        decision = judge(policy, "d", [item])
        assert not decision.allowed
        assert decision.requirements[0].candidates[0].added_by == "yourself"

    def test_a_legacy_client_id_with_a_wrong_check_digit_is_refused_by_policy_check(
        self, write_policy
    ):
        from app.errors import PolicyError

        with pytest.raises(PolicyError, match="check digit is wrong"):
            load_policy(write_policy(self.POLICY.replace(LEGACY_CLIENT, "0000-0002-1694-2330")))


class TestOrganizations:
    @pytest.mark.parametrize(
        "org_id, org_source, allowed",
        [
            ("https://ror.org/05x6aa123", "ROR", True),
            ("05x6aa123", "ROR", True),
            (" https://ror.org/05X6AA123/ ", " ror ", True),
            ("https://ror.org/05x6aa123", "GRID", False),
            ("05x6aa123", "RINGGOLD", False),
            ("https://ror.org/05x6aa123", None, False),
            ("https://ror.org/05x6aa999", "ROR", False),
        ],
        ids=[
            "ror-url",
            "ror-bare",
            "ror-untidy",
            "grid-same-text",
            "ringgold",
            "no-source",
            "other",
        ],
    )
    def test_an_organisation_matches_only_with_its_disambiguation_source(
        self, policy, org_id, org_source, allowed
    ):
        item = srt(org_id=org_id, org_source=org_source)
        assert judge(policy, "sail", [item, gcp()]).allowed is allowed

    @pytest.mark.parametrize(
        "rule, org_id, org_source",
        [
            ("{source: GRID, id: grid.5337.2}", "grid.5337.2", "GRID"),
            ("{source: ringgold, id: '1234'}", "1234", "RINGGOLD"),
            (
                "{source: FUNDREF, id: '10.13039/100000001'}",
                "http://dx.doi.org/10.13039/100000001",
                "FUNDREF",
            ),
            ("{source: LEI, id: 5493001KJTIIGC8Y1R12}", "5493001kjtiigc8y1r12", "LEI"),
            ("https://ror.org/05x6aa123", "05x6aa123", "ROR"),
        ],
        ids=["grid", "ringgold", "fundref-doi-url", "lei-case", "ror"],
    )
    def test_the_policy_names_any_source_and_it_must_match_both_parts(
        self, write_policy, rule, org_id, org_source
    ):
        policy = load_policy(
            write_policy(
                f"""
                version: 1
                qualifications:
                  q:
                    title: Safe Researcher Training
                    organization: {rule}
                    sources: [ukds]
                sources:
                  ukds: {{client_ids: [{UKDS}]}}
                datasets:
                  d: {{paths: [/d/], require: [q]}}
                """
            )
        )
        assert judge(policy, "d", [srt(org_id=org_id, org_source=org_source)]).allowed
        other = "ROR" if org_source != "ROR" else "GRID"
        decision = judge(policy, "d", [srt(org_id=org_id, org_source=other)])
        assert not decision.allowed
        assert reasons(decision) == {"organization_mismatch"}


class TestExternalIdRelationship:
    POLICY = """
    version: 1
    qualifications:
      cert:
        external_id: {type: other-id, value: PROG-1}
        sources: [self-asserted]
      member:
        external_id: {type: other-id, value: PROG-1, relationship: part-of}
        sources: [self-asserted]
    datasets:
      cert: {paths: [/c/], require: [cert]}
      member: {paths: [/m/], require: [member]}
    """

    @pytest.mark.parametrize(
        "relationship, cert, member",
        [("self", True, False), ("part-of", False, True), (None, False, False)],
        ids=["self", "part-of", "none"],
    )
    def test_a_rule_matches_only_the_relationship_it_names(
        self, write_policy, relationship, cert, member
    ):
        policy = load_policy(write_policy(self.POLICY))
        item = orcid_json.qualification(
            1,
            owner=RESEARCHER,
            title="Programme module",
            external_ids=[("other-id", "PROG-1", relationship)],
        )
        assert judge(policy, "cert", [item]).allowed is cert
        assert judge(policy, "member", [item]).allowed is member

    def test_a_relationship_outside_orcids_list_makes_the_item_unreadable(self):
        item = srt(external_ids=[("other-id", "PROG-1", "SELF")])
        assert isinstance(read_item(item), UnreadableItem)


class TestUnreadableItems:
    def test_a_malformed_item_that_is_no_candidate_refuses_nothing(self, policy):
        other = orcid_json.qualification(3, owner=RESEARCHER, title="First Aid", end="2025-13")
        assert isinstance(read_item(other), UnreadableItem)
        decision = judge(policy, "sail", [srt(), gcp(), other])
        assert decision.allowed

    def test_a_malformed_candidate_refuses_only_the_requirement_it_could_have_met(self, policy):
        broken = srt()
        broken["end-date"] = {"year": None, "month": {"value": "12"}, "day": None}
        decision = judge(policy, "sail", [broken, gcp()])
        assert not decision.allowed
        srt_result, gcp_result = decision.requirements
        assert not srt_result.met and gcp_result.met
        [candidate] = srt_result.candidates
        assert [f.reason for f in candidate.failures] == ["unreadable_item"]
        text = "\n".join(explain_lines(policy, decision))
        assert "ORCID returned this item in a form we could not read" in text
        assert "please tell the data steward" in text

    def test_a_malformed_item_beside_a_good_one_for_the_same_requirement_does_not_block(
        self, policy
    ):
        broken = srt(put_code=3)
        broken["source"] = "somebody"
        decision = judge(policy, "sail", [broken, srt(), gcp()])
        assert decision.allowed
        assert decision.requirements[0].put_code == 1

    def test_an_unreadable_item_whose_title_is_unreadable_is_a_candidate_everywhere(self, policy):
        broken = srt()
        broken["role-title"] = ["Safe Researcher Training"]
        unreadable = read_item(broken)
        assert isinstance(unreadable, UnreadableItem) and unreadable.title is None
        dataset = policy.dataset("sail")
        assert policy.is_candidate(dataset, unreadable)
        assert all(rule.is_candidate(unreadable) for rule in policy.rules_for(dataset))

    def test_an_unreadable_decision_survives_the_json_round_trip(self, policy):
        from app.decision import Decision

        broken = srt()
        broken["put-code"] = None
        decision = judge(policy, "sail", [broken, gcp()])
        assert Decision.from_dict(decision.to_dict()) == decision
        assert decision.requirements[0].candidates[0].put_code is None


def test_dates_are_judged_on_the_day_passed_in():
    # A guard for the tests above: "now" is theirs, never the machine's clock.
    assert at("2026-11-25").date() == dt.date(2026, 11, 25)


class TestHostileText:
    def test_a_lone_surrogate_in_a_title_is_read_as_a_replacement_character(self, policy):
        # JSON allows "\ud800"; RE2 (title_pattern) cannot encode it, and a traceback here
        # would be a 500 on the dataset page.
        import json

        item = gcp()
        item["role-title"] = "Good Clinical Practice \ud800"
        parsed = read_item(json.loads(json.dumps(item)))
        assert parsed.title == "Good Clinical Practice \ufffd"
        assert policy.qualifications["gcp"].is_candidate(parsed)
        assert judge(policy, "sail", [srt(), item]).allowed  # the pattern is a prefix

    @pytest.mark.parametrize("value", [["https://example.org"], {"x": 1}, True])
    def test_a_wrapped_value_of_the_wrong_type_makes_the_item_unreadable(self, value):
        item = srt()
        item["url"] = {"value": value}
        assert isinstance(read_item(item), UnreadableItem)


class TestReviewFindings:
    """Shapes a review of the parser and the judge found to need a firmer answer."""

    def test_an_item_the_researcher_wrote_for_a_provider_reads_as_theirs(self, policy):
        src = orcid_json.source(orcid=RESEARCHER, origin_client_id=UKDS)
        decision = judge(policy, "sail", [srt(src=src), gcp()])
        assert not decision.allowed
        assert decision.requirements[0].candidates[0].added_by == (
            "yourself on behalf of UK Data Service"
        )

    @pytest.mark.parametrize(
        "reference",
        [
            {"uri": "https://evil.example/client/APP-UKDS000000000001", "path": None},
            {"uri": "http://orcid.org/client/APP-UKDS000000000001", "path": None},
            {"uri": None, "path": "APP-UKDS000000000001", "host": "evil.example"},
            {"uri": "https://notorcid.org/client/APP-UKDS000000000001", "path": None},
        ],
        ids=["other-host", "plain-http", "other-host-member", "look-alike-host"],
    )
    def test_a_source_outside_orcids_hosts_is_unknown(self, policy, reference):
        src = orcid_json.source(name="UK Data Service")
        src["source-client-id"] = reference
        assert read_item(srt(src=src)).source.unknown
        assert not judge(policy, "sail", [srt(src=src), gcp()]).allowed

    @pytest.mark.parametrize("created", ["١٧٣٥٦٨٩٦٠٠٠٠٠", "1_735_689_600_000", "-1", "1e12"])
    def test_a_created_date_in_anything_but_ascii_digits_is_unreadable(self, created):
        item = srt()
        item["created-date"] = {"value": created}
        assert isinstance(read_item(item), UnreadableItem)

    def test_an_end_date_without_members_is_unreadable_not_no_expiry(self, policy):
        item = srt()
        item["end-date"] = {}
        assert not judge(policy, "sail", [item, gcp()]).allowed


class TestCompletionDates:
    POLICY = f"""
    version: 1
    sources:
      ukds: {{client_ids: [{UKDS}]}}
    qualifications:
      srt:
        title: Safe Researcher Training
        sources: [ukds]
        end_date: completion
        max_age_days: 730
    datasets:
      d: {{paths: [/d/], require: [srt]}}
    """

    @pytest.mark.parametrize(
        "start, end, allowed, reason",
        [
            ("2026-09-01", None, False, "not_completed"),  # enrolled: no end date yet
            ("2026-09-01", "2026-12-15", False, "not_completed"),  # ends after today
            ("2026-09-01", "2026-11-25", False, "not_completed"),  # completes today
            ("2026-09-01", "2026-11-24", True, None),  # completed yesterday
            ("2024-01-01", "2024-11-01", False, "too_old"),  # completed over 730 days ago
        ],
        ids=["in-progress", "ends-later", "ends-today", "completed", "completed-long-ago"],
    )
    def test_with_completion_dates_only_finished_training_counts(
        self, write_policy, start, end, allowed, reason
    ):
        policy = load_policy(write_policy(self.POLICY))
        decision = judge(policy, "d", [srt(start=start, end=end)])
        assert decision.allowed is allowed
        if reason:
            assert reasons(decision) == {reason}

    def test_a_refusal_for_training_in_progress_is_judged_again_when_it_completes(
        self, write_policy
    ):
        policy = load_policy(write_policy(self.POLICY))
        decision = judge(policy, "d", [srt(start="2026-09-01", end="2026-12-15")])
        assert decision.valid_until == dt.datetime(2026, 12, 16, tzinfo=dt.UTC)

    def test_training_in_progress_with_no_end_date_is_not_judged_again_in_the_past(
        self, write_policy
    ):
        policy = load_policy(write_policy(self.POLICY))
        decision = judge(policy, "d", [srt(start="2025-01-01")])
        assert not decision.allowed
        assert decision.valid_until is None  # cached as long as any refusal

    @pytest.mark.parametrize(
        "end, allowed, valid_until",
        [
            ("2024", False, None),  # may have ended 1 January 2024: 730 days ran out in 2025
            ("2024-12", True, dt.date(2026, 12, 1)),  # 730 days from 1 December 2024
            ("2025", True, dt.date(2027, 1, 1)),
        ],
    )
    def test_a_partial_completion_date_ages_from_its_first_day(
        self, write_policy, end, allowed, valid_until
    ):
        policy = load_policy(write_policy(self.POLICY))
        decision = judge(policy, "d", [srt(start="2024-01-01", end=end)])
        assert decision.allowed is allowed
        if allowed:
            assert decision.requirements[0].valid_until == valid_until
        else:
            assert reasons(decision) == {"too_old"}

    def test_an_allow_lasts_until_the_age_limit_from_completion(self, write_policy):
        policy = load_policy(write_policy(self.POLICY))
        decision = judge(policy, "d", [srt(start="2026-09-01", end="2026-11-24")])
        assert decision.requirements[0].valid_until == dt.date(2028, 11, 23)

    def test_the_default_reads_the_end_date_as_expiry(self, policy):
        assert policy.qualifications["safe-researcher"].end_date == "expiry"


class TestPolicyBounds:
    @pytest.mark.parametrize(
        "rule, message",
        [
            ("title_pattern: 'Good Clinical Practice|'", "matches an empty title"),
            ("title_pattern: '(Safe Researcher)?'", "matches an empty title"),
            ("title: A, max_age_days: 2914000", "from 1 to 36500"),
            ("title: A, url_prefix: 'https://example.org/certs'", "must end with /"),
            ("title: A, url_prefix: 'https://me@example.org/certs/'", "no user"),
            ("title: A, end_date: whenever", "must be one of expiry, completion"),
        ],
        ids=["alternation", "optional", "age", "prefix-mid-name", "prefix-user", "end-date"],
    )
    def test_settings_that_grant_more_than_meant_are_problems(self, write_policy, rule, message):
        from app.errors import PolicyError

        text = f"""
        version: 1
        qualifications:
          q: {{{rule}, sources: [self-asserted]}}
        datasets:
          d: {{paths: [/d/], require: [q], cache_ttl: 60}}
        """
        with pytest.raises(PolicyError, match=message):
            load_policy(write_policy(text))

    def test_a_huge_cache_ttl_is_a_problem_not_an_overflow_later(self, write_policy):
        from app.errors import PolicyError

        text = """
        version: 1
        qualifications:
          q: {title: A, sources: [self-asserted]}
        datasets:
          d: {paths: [/d/], require: [q], cache_ttl: 99999999999999}
        """
        with pytest.raises(PolicyError, match="from 1 to 31536000"):
            load_policy(write_policy(text))

    @pytest.mark.parametrize(
        "url, allowed",
        [
            ("https://example.org/certs/123", True),
            ("HTTPS://EXAMPLE.ORG/certs/123", True),
            ("https://example.org/certs/../../evil", False),
            ("https://example.org/certs/%2e%2e/evil", False),
            ("https://example.org/certs.evil.com/x", False),
            ("https://example.org@evil.com/certs/1", False),
            ("https://evil.com/https://example.org/certs/1", False),
            ("http://example.org/certs/123", False),
            (None, False),
            ("https://example.org/certs/..;/evil", False),  # a servlet reads ..;/ as ../
            ("https://example.org/certs/%252e%252e/evil", False),
            ("https://example.org/certs/..%5Cevil", False),
            ("https://example.org/certs/.../x", False),
            ("https://example.org/certs/?id=1", True),  # the folder itself, with a query
        ],
        ids=[
            "under",
            "case",
            "dot-dot",
            "encoded-dot-dot",
            "neighbour",
            "userinfo",
            "other-host",
            "other-scheme",
            "none",
            "dot-dot-with-parameter",
            "double-encoded-dot-dot",
            "encoded-backslash",
            "three-dots",
            "the-folder-with-a-query",
        ],
    )
    def test_url_prefix_compares_scheme_host_and_path(self, write_policy, url, allowed):
        policy = load_policy(
            write_policy(
                """
                version: 1
                qualifications:
                  q: {title: A, url_prefix: 'https://example.org/certs/', sources: [self-asserted]}
                datasets:
                  d: {paths: [/d/], require: [q]}
                """
            )
        )
        item = orcid_json.qualification(1, owner=RESEARCHER, title="A", url=url)
        assert judge(policy, "d", [item]).allowed is allowed


def test_a_refusal_holds_no_shorter_because_another_requirement_was_met(policy):
    # The met requirement's item passed: it is not waiting for anything, and must not
    # pull the refusal's "judge again" time into the past.
    decision = judge(policy, "sail", [srt(start="2020-01-01")])
    assert not decision.allowed
    assert decision.valid_until is None or decision.valid_until > at("2026-11-25")
