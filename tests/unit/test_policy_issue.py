"""A qualification rule's ``issue:`` section: checked like every other, and the body it writes."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from pathlib import Path

import pytest

from app.errors import PolicyError
from app.orcid_writer import qualification_body as issue_body
from app.policy import load_policy
from app.policy.model import AcceptTerms, IssueOrganization

SAMPLE = json.loads(
    (
        Path(__file__).parents[1]
        / "data"
        / "orcid"
        / "samples"
        / "orcid-model_write_samples_qualification-3.0.json"
    ).read_text()
)
ORCID = "0000-0002-1825-0097"

GOOD = """\
version: 1
qualifications:
  sail-dua:
    title: Accepted the SAIL data access agreement
    sources: [self-issued]
    issue:
      organization: {name: SAIL Databank, city: Swansea, country: GB, ror: 053fq8t95}
      url: https://example.org/sail/dua
      external_id: {type: other-id, value: "sail-dua-{orcid}"}
      valid_for_days: 365
      accept_terms: {url: https://example.org/sail/dua, version: "2026-1"}
datasets:
  d:
    paths: [/d/]
    require: [sail-dua]
"""


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def problems(tmp_path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as raised:
        load_policy(path)
    return [str(p).removeprefix(f"{path}:") for p in raised.value.problems]


def issue_section(**changes) -> str:
    """GOOD with keys of its issue section replaced (a value None removes the key)."""
    lines = {
        "organization": "{name: SAIL Databank, city: Swansea, country: GB, ror: 053fq8t95}",
        "url": "https://example.org/sail/dua",
        "external_id": '{type: other-id, value: "sail-dua-{orcid}"}',
        "valid_for_days": "365",
        "accept_terms": '{url: https://example.org/sail/dua, version: "2026-1"}',
    }
    lines.update(changes)
    body = "".join(f"      {k}: {v}\n" for k, v in lines.items() if v is not None)
    return (
        "version: 1\nqualifications:\n  sail-dua:\n"
        "    title: Accepted the SAIL data access agreement\n"
        "    sources: [self-issued]\n    issue:\n" + body
    )


class TestIssueSection:
    def test_a_good_section_loads(self, tmp_path):
        rule = load_policy(write(tmp_path, GOOD)).qualifications["sail-dua"]
        issue = rule.issue
        assert issue.title == "Accepted the SAIL data access agreement"  # the rule's title
        assert issue.organization == IssueOrganization(
            "SAIL Databank", "Swansea", "GB", "053fq8t95"
        )
        assert issue.url == "https://example.org/sail/dua"
        assert issue.external_id_value(ORCID) == f"sail-dua-{ORCID}"
        assert issue.valid_for_days == 365
        assert issue.accept_terms == AcceptTerms("https://example.org/sail/dua", "2026-1")
        assert issue.steward is False

    def test_steward_true_is_the_other_way_to_earn_it(self, tmp_path):
        text = issue_section(accept_terms=None, steward="true")
        rule = load_policy(write(tmp_path, text)).qualifications["sail-dua"]
        assert rule.issue.steward is True
        assert rule.issue.accept_terms is None

    def test_a_full_ror_url_is_accepted(self, tmp_path):
        org = "{name: S, city: Swansea, country: GB, ror: 'https://ror.org/053fq8t95'}"
        rule = load_policy(write(tmp_path, issue_section(organization=org))).qualifications[
            "sail-dua"
        ]
        assert rule.issue.organization.ror == "053fq8t95"

    def test_the_shipped_example_loads_and_a_dataset_requires_it(self):
        policy = load_policy(Path(__file__).parents[2] / "policies")
        issue = policy.qualifications["sail-dua"].issue
        assert issue.accept_terms is not None
        assert issue.external_id_value(ORCID) == f"sail-dua-2026-1-{ORCID}"
        assert any("sail-dua" in req.options for d in policy.datasets.values() for req in d.require)
        assert policy.qualifications["induction"].issue.steward is True
        assert policy.warnings == ()

    def test_version_fills_in_the_terms_version_so_new_terms_write_a_new_item(self, tmp_path):
        ext = '{type: other-id, value: "dua-{version}-{orcid}"}'
        policy = load_policy(write(tmp_path, issue_section(external_id=ext)))
        assert policy.qualifications["sail-dua"].issue.external_id_value(ORCID) == (
            f"dua-2026-1-{ORCID}"
        )
        assert policy.warnings == ()

    def test_without_version_accepting_new_terms_renews_and_check_warns(self, tmp_path):
        policy = load_policy(write(tmp_path, GOOD))
        assert [str(w) for w in policy.warnings] == [
            f"{policy.files[0]}:9: qualifications.sail-dua.issue.external_id.value: has no "
            "{version}: accepting a new version of the terms renews the same item instead "
            "of writing a new one"
        ]

    @pytest.mark.parametrize(
        ("changes", "expected"),
        [
            (
                {"steward": "true"},
                [
                    "6: qualifications.sail-dua.issue: needs exactly one of accept_terms: "
                    "{url: ..., version: ...} (the researcher accepts terms on our page) or "
                    "steward: true (a steward grants it), not both"
                ],
            ),
            (
                {"accept_terms": None},
                [
                    "6: qualifications.sail-dua.issue: needs exactly one of accept_terms: "
                    "{url: ..., version: ...} (the researcher accepts terms on our page) or "
                    "steward: true (a steward grants it)"
                ],
            ),
            (
                {"external_id": '{type: other-id, value: "dua-{orcid}-{name}"}'},
                [
                    "9: qualifications.sail-dua.issue.external_id.value: 'dua-{orcid}-{name}': "
                    "the only placeholders are {orcid} (the researcher's iD) and {version} "
                    "(the version of the terms accepted)"
                ],
            ),
            (
                {
                    "external_id": '{type: other-id, value: "dua-{version}-{orcid}"}',
                    "accept_terms": None,
                    "steward": "true",
                },
                [
                    "9: qualifications.sail-dua.issue.external_id.value: {version} is the "
                    "version of accept_terms, which this section does not have"
                ],
            ),
            (
                {"external_id": None},
                [
                    "6: qualifications.sail-dua.issue.external_id: is required: an ID such as "
                    "{type: other-id, value: 'sail-dua-{orcid}'} makes a second write of the "
                    "same item ORCID's 'already added'"
                ],
            ),
            (
                {"valid_for_days": "0"},
                [
                    "10: qualifications.sail-dua.issue.valid_for_days: must be a whole number "
                    "from 1 to 36500"
                ],
            ),
            (
                {"organization": "{name: S, city: Swansea, country: gb, ror: 053fq8t95}"},
                [
                    "7: qualifications.sail-dua.issue.organization.country: 'gb' is not an ISO "
                    "3166-1 alpha-2 code (two capital letters, such as GB)"
                ],
            ),
            (
                {"organization": "{name: S, country: GB, ror: grid.5337.2}"},
                [
                    "7: qualifications.sail-dua.issue.organization.city: is required",
                    "7: qualifications.sail-dua.issue.organization.ror: 'grid.5337.2' is not a "
                    "ROR ID (https://ror.org/ and 9 characters)",
                ],
            ),
            (
                {"accept_terms": "{url: https://example.org/t, version: 2}"},
                [
                    "11: qualifications.sail-dua.issue.accept_terms.version: must be text: "
                    "quote it, version: '2'"
                ],
            ),
            (
                {"valid_for": "365"},
                [
                    "12: qualifications.sail-dua.issue.valid_for: unknown key: did you mean "
                    "'valid_for_days'? (allowed here: title, organization, url, external_id, "
                    "valid_for_days, accept_terms, steward)"
                ],
            ),
        ],
        ids=[
            "both-ways-to-earn",
            "no-way-to-earn",
            "unknown-placeholder",
            "version-without-terms",
            "no-external-id",
            "zero-days",
            "country-not-alpha-2",
            "every-problem-at-once",
            "version-a-number",
            "misspelt-key",
        ],
    )
    def test_a_bad_section_is_a_problem_on_its_line(self, tmp_path, changes, expected):
        assert problems(tmp_path, issue_section(**changes)) == expected

    def test_a_rule_with_issue_must_accept_self_issued(self, tmp_path):
        text = issue_section().replace("sources: [self-issued]", "sources: [self-asserted]")
        assert problems(tmp_path, text) == [
            "5: qualifications.sail-dua.sources: lists no self-issued, but the rule has "
            "issue: what this service writes to a record would not count; add self-issued"
        ]

    def test_what_is_written_must_meet_the_rules_own_keys(self, tmp_path):
        text = issue_section().replace(
            "    sources: [self-issued]\n",
            "    sources: [self-issued]\n"
            "    organization: 05x6aa123\n"
            "    url_prefix: https://example.org/certs/\n"
            "    external_id: {type: other-id, value: sail-dua}\n",
        )
        assert problems(tmp_path, text) == [
            "10: qualifications.sail-dua.issue.organization.ror: https://ror.org/053fq8t95 is "
            "not the rule's organization (https://ror.org/05x6aa123)",
            "11: qualifications.sail-dua.issue.url: is not under the rule's url_prefix "
            "https://example.org/certs/",
            "12: qualifications.sail-dua.issue.external_id: differs from the rule's "
            "external_id, so the item written would not count",
        ]

    def test_a_placeholder_in_the_rules_own_external_id_is_a_problem(self, tmp_path):
        text = issue_section().replace(
            "    sources: [self-issued]\n",
            "    sources: [self-issued]\n"
            '    external_id: {type: other-id, value: "sail-dua-{orcid}"}\n',
        )
        assert problems(tmp_path, text) == [
            "6: qualifications.sail-dua.external_id.value: is matched exactly as written: "
            "{orcid} is a placeholder only under issue:, so no item would match; leave "
            "external_id out and let the title identify it"
        ]

    def test_an_issued_title_the_rule_would_not_match_is_a_problem(self, tmp_path):
        text = issue_section(title="Something else")
        assert problems(tmp_path, text) == [
            "12: qualifications.sail-dua.issue.title: 'Something else' does not match the "
            "rule's title, so it would not count"
        ]

    def test_issuing_with_end_date_completion_is_a_problem(self, tmp_path):
        text = issue_section().replace(
            "    sources: [self-issued]\n", "    sources: [self-issued]\n    end_date: completion\n"
        )
        assert problems(tmp_path, text) == [
            "6: qualifications.sail-dua.end_date: is completion, but an issued item's end "
            "date is when it expires (valid_for_days): use the default, expiry"
        ]


class TestIssueBody:
    @pytest.fixture
    def rule(self, tmp_path):
        return load_policy(write(tmp_path, GOOD)).qualifications["sail-dua"]

    def test_the_body_is_orcids_write_sample_shape(self, rule):
        body = issue_body(rule, ORCID, dt.date(2026, 3, 1))

        def shape(value, sample, where="body"):
            if isinstance(sample, dict):
                assert isinstance(value, dict), where
                assert value.keys() <= sample.keys(), where
                for key in value:
                    shape(value[key], sample[key], f"{where}.{key}")
            elif isinstance(sample, list):
                assert isinstance(value, list) and value, where
                for item in value:
                    shape(item, sample[0], f"{where}[]")
            else:
                assert type(value) is type(sample), where

        shape(body, SAMPLE)
        assert set(SAMPLE) - set(body) == {"department-name"}

    def test_the_body_says_what_the_rule_says_for_this_researcher_and_day(self, rule):
        body = issue_body(rule, ORCID, dt.date(2026, 3, 1))
        assert body == {
            "role-title": "Accepted the SAIL data access agreement",
            "start-date": {"year": {"value": "2026"}, "month": {"value": "03"},
                           "day": {"value": "01"}},
            "end-date": {"year": {"value": "2027"}, "month": {"value": "03"},
                         "day": {"value": "01"}},
            "organization": {
                "name": "SAIL Databank",
                "address": {"city": "Swansea", "country": "GB"},
                "disambiguated-organization": {
                    "disambiguated-organization-identifier": "https://ror.org/053fq8t95",
                    "disambiguation-source": "ROR",
                },
            },
            "url": {"value": "https://example.org/sail/dua"},
            "external-ids": {"external-id": [{
                "external-id-type": "other-id",
                "external-id-value": f"sail-dua-{ORCID}",
                "external-id-relationship": "self",
            }]},
        }  # fmt: skip

    def test_the_end_date_crosses_a_leap_day(self, rule):
        body = issue_body(rule, ORCID, dt.date(2027, 3, 1))
        assert body["end-date"]["day"] == {"value": "29"}  # 2027-03-01 + 365 = 2028-02-29

    def test_a_rule_without_issue_has_no_body(self, tmp_path):
        rule = load_policy(Path(__file__).parents[2] / "policies").qualifications["gcp"]
        with pytest.raises(ValueError):
            issue_body(rule, ORCID, dt.date(2026, 3, 1))
