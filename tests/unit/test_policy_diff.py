"""gatekeeper policy diff: what changed between two policies, in words."""

import pytest

from app.policy import load_policy
from app.policy.diff import diff_policies
from tests.conftest import POLICY


@pytest.fixture
def diff(write_policy):
    def run(*replacements):
        text = POLICY
        for old, new in replacements:
            assert old in text, old
            text = text.replace(old, new)
        old = load_policy(write_policy(POLICY, name="old.yaml"))
        return diff_policies(old, load_policy(write_policy(text, name="new.yaml")))

    return run


class TestPolicyDiff:
    def test_the_same_policy_has_no_differences(self, diff):
        assert diff() == []

    def test_comments_and_key_order_are_no_difference(self, diff):
        assert diff(("    cache_ttl: 900\n", "    cache_ttl: 900  # fifteen minutes\n")) == []

    @pytest.mark.parametrize(
        "replacement, expected",
        [
            (
                (
                    "    client_ids: [APP-UKDS000000000001]\n",
                    "    client_ids: [APP-UKDS000000000001, APP-UKDS000000000002]\n",
                ),
                ['source "ukds": now also trusts client ID APP-UKDS000000000002'],
            ),
            (
                ("APP-NIHR000000000001, APP-NIHRPORTAL000001", "APP-NIHR000000000001"),
                ['source "nihr": no longer trusts client ID APP-NIHRPORTAL000001'],
            ),
            (
                ("    name: NIHR Learn\n", "    name: NIHR Learning\n"),
                ["source \"nihr\": name 'NIHR Learn' -> 'NIHR Learning'"],
            ),
            (
                ("    sources: [nihr]\n", "    sources: [nihr, self-asserted]\n"),
                ['qualification "gcp": now also accepted from self-asserted (required by sail)'],
            ),
            (
                ("    sources: [ukds, self-issued]\n", "    sources: [ukds]\n"),
                [
                    'qualification "safe-researcher": no longer accepted from self-issued '
                    "(required by sail)"
                ],
            ),
            (
                ("title_pattern: '^Good Clinical Practice'", "title_pattern: '^GCP'"),
                [
                    "qualification \"gcp\": title_pattern '^Good Clinical Practice' -> '^GCP' "
                    "(required by sail)"
                ],
            ),
            (
                ("    max_age_days: 365\n", "    max_age_days: 730\n"),
                ['qualification "recent": max_age_days 365 -> 730 (required by open)'],
            ),
            (
                ("    organization: https://ror.org/05x6aa123\n", ""),
                [
                    'qualification "safe-researcher": organization https://ror.org/05x6aa123 '
                    "-> none (required by sail)"
                ],
            ),
            (
                (
                    "    url_prefix: https://example.org/certs/\n",
                    "    url_prefix: https://example.org/certificates/\n",
                ),
                [
                    "qualification \"certified\": url_prefix 'https://example.org/certs/' -> "
                    "'https://example.org/certificates/' (required by certs)"
                ],
            ),
            (
                ("value: https://example.org/quals/hsr}", "value: https://example.org/q/hsr}"),
                [
                    'qualification "hsr": external_id uri https://example.org/quals/hsr '
                    "(relationship self) -> uri https://example.org/q/hsr (relationship self) "
                    "(required by sail)"
                ],
            ),
            (
                ("    paths: [/datasets/sail/]\n", "    paths: [/datasets/sail/, /sail/]\n"),
                ['dataset "sail": now also protects /sail/'],
            ),
            (
                ("paths: [/datasets/open/, /datasets/open/extra/]", "paths: [/datasets/open/]"),
                ['dataset "open": no longer protects /datasets/open/extra/'],
            ),
            (
                ("{any_of: [gcp, hsr]}", "{any_of: [gcp, hsr, recent]}"),
                ["dataset \"sail\": requirement 'any of: gcp, hsr' now also accepts recent"],
            ),
            (
                ("{any_of: [gcp, hsr]}", "gcp"),
                ["dataset \"sail\": requirement 'any of: gcp, hsr' no longer accepts hsr"],
            ),
            (
                ("    require: [recent]\n", "    require: [recent, certified]\n"),
                ['dataset "open": now requires certified'],
            ),
            (
                ("    require: [certified]\n", "    require: [recent]\n"),
                [
                    'dataset "certs": now requires recent',
                    'dataset "certs": no longer requires certified',
                ],
            ),
            (
                ("    cache_ttl: 900\n", "    cache_ttl: 600\n"),
                ['dataset "sail": cache_ttl 900 -> 600'],
            ),
        ],
        ids=[
            "client-added",
            "client-removed",
            "source-name",
            "source-trusted",
            "source-untrusted",
            "title-pattern",
            "max-age",
            "organization",
            "url-prefix",
            "external-id",
            "path-added",
            "path-removed",
            "any-of-wider",
            "any-of-narrower",
            "requirement-added",
            "requirement-replaced",
            "cache-ttl",
        ],
    )
    def test_one_change_is_one_sentence(self, diff, replacement, expected):
        assert diff(replacement) == expected

    def test_datasets_sources_and_qualifications_added_and_removed(self, diff):
        lines = diff(
            (
                "  certs:\n    paths: [/certs/]\n    require: [certified]\n",
                "  survey:\n    paths: [/datasets/survey/]\n"
                "    require: [recent, {any_of: [gcp, hsr]}]\n",
            ),
            (
                "  certified:\n",
                "  ethics:\n    title: Research Ethics\n    sources: [ukds]\n  certified:\n",
            ),
            (
                "  nihr:\n",
                "  ons:\n    name: Office for National Statistics\n"
                "    client_ids: [APP-ONS0000000000001]\n  nihr:\n",
            ),
        )
        assert lines == [
            'source "ons" added: Office for National Statistics, trusting client IDs '
            "APP-ONS0000000000001",
            "qualification \"ethics\" added: title 'Research Ethics', from ukds",
            'dataset "survey" added: paths /datasets/survey/; requires recent and any of: gcp, hsr',
            'dataset "certs" removed: paths /certs/ are no longer its own',
        ]

    def test_a_removed_source_and_qualification_name_what_used_them(self, write_policy):
        old = load_policy(write_policy(POLICY, name="old.yaml"))
        text = (
            POLICY.replace("    sources: [nihr, self-asserted]\n", "    sources: [self-asserted]\n")
            .replace("    sources: [nihr]\n", "    sources: [self-asserted]\n")
            .replace("  nihr:\n    name: NIHR Learn\n", "")
            .replace("    client_ids: [APP-NIHR000000000001, APP-NIHRPORTAL000001]\n", "")
        )
        lines = diff_policies(old, load_policy(write_policy(text, name="new.yaml")))
        assert lines[0] == (
            'source "nihr" removed: client IDs APP-NIHR000000000001, APP-NIHRPORTAL000001 '
            "are no longer trusted"
        )
        assert 'qualification "gcp": no longer accepted from nihr (required by sail)' in lines
