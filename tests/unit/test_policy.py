import re
import textwrap
from pathlib import Path

import pytest

from app.errors import PolicyError, UnknownDataset
from app.policy import load_policy, normalize_path
from tests.conftest import POLICY, RESEARCHER

DATA = Path(__file__).parent.parent / "data" / "policies"
BROKEN = sorted((DATA / "broken").glob("*.yaml"))
REPO_POLICIES = Path(__file__).parents[2] / "policies"


def expectations(path: Path) -> list[tuple[int, str, str]]:
    """Each broken policy names its expected problems: '# expect: LINE: key: message'."""
    found = []
    for line in path.read_text().splitlines():
        match = re.match(r"# expect: (\d+): (\S+): (.+)$", line)
        if match:
            found.append((int(match[1]), match[2], match[3]))
    return found


class TestLoadingProblems:
    @pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
    def test_broken_policy_reports_each_problem_with_file_line_and_key(self, path):
        with pytest.raises(PolicyError) as raised:
            load_policy(path)
        problems = raised.value.problems
        rendered = [str(p) for p in problems]
        for line, key, message in expectations(path):
            assert any(
                p.file == str(path) and p.line == line and p.key == key and message in p.message
                for p in problems
            ), f"expected {line}: {key}: {message} in {rendered}"
        assert all(r.startswith(f"{path}:") for r in rendered)

    def test_every_broken_policy_names_its_expected_problems(self):
        assert BROKEN and all(expectations(p) for p in BROKEN)

    def test_an_item_of_the_wrong_type_does_not_hide_the_others(self, write_policy):
        path = write_policy(
            """
            version: 1
            sources:
              ukds:
                client_ids:
                  - APP-XXXX
                  - 12345
            """
        )
        with pytest.raises(PolicyError) as raised:
            load_policy(path)
        assert [str(p) for p in raised.value.problems] == [
            f"{path}:5: sources.ukds.client_ids[0]: 'APP-XXXX' is not an ORCID client ID "
            "(APP- and 16 letters or digits, or a legacy client's iD-shaped ID such as "
            "0000-0002-1825-0097)",
            f"{path}:6: sources.ukds.client_ids[1]: must be a non-empty string",
        ]

    def test_a_name_defined_in_two_files_names_both(self, tmp_path):
        for name in ("one.yaml", "two.yaml"):
            (tmp_path / name).write_text(
                "version: 1\nqualifications:\n  srt: {title: X, sources: [self-asserted]}\n"
            )
        with pytest.raises(PolicyError) as raised:
            load_policy(tmp_path)
        [problem] = raised.value.problems
        assert problem.file == str(tmp_path / "two.yaml") and problem.line == 3
        assert str(tmp_path / "one.yaml") in problem.message
        assert str(tmp_path / "two.yaml") in problem.message

    def test_two_datasets_cannot_protect_the_same_path(self, write_policy):
        path = write_policy(
            """
            version: 1
            qualifications: {q: {title: Q, sources: [self-asserted]}}
            datasets:
              a: {paths: [/x/], require: [q]}
              b: {paths: [/x/], require: [q]}
            """
        )
        with pytest.raises(PolicyError) as raised:
            load_policy(path)
        assert [str(p) for p in raised.value.problems] == [
            f"{path}:5: datasets.b.paths[0]: '/x/' is already protected by dataset 'a'"
        ]

    @pytest.mark.parametrize(
        "name, content, message",
        [
            ("missing", None, "no such file or directory"),
            ("empty.yaml", "", "the file is empty"),
            ("list.yaml", "- 1\n", "must be a mapping"),
            (
                "builtin.yaml",
                "version: 1\nsources:\n  self-issued: {client_ids: [x]}\n",
                "built in",
            ),
        ],
    )
    def test_unusable_files_are_reported(self, tmp_path, name, content, message):
        path = tmp_path / name
        if content is not None:
            path.write_text(content)
        with pytest.raises(PolicyError) as raised:
            load_policy(path)
        assert message in str(raised.value.problems)

    def test_a_directory_without_yaml_is_reported(self, tmp_path):
        with pytest.raises(PolicyError, match=r"no \*\.yaml files"):
            load_policy(tmp_path)


class TestLoadedPolicy:
    def test_files_in_a_directory_are_merged(self):
        loaded = load_policy(DATA / "split")
        assert loaded.datasets["d"].require[0].options == ("srt",)
        assert loaded.sources["ukds"].client_ids == ("APP-UKDS000000000001",)
        assert len(loaded.files) == 2

    def test_the_shipped_example_policies_load(self):
        loaded = load_policy(REPO_POLICIES)
        assert {"sail-cohort", "survey-microdata"} <= set(loaded.datasets)

    def test_version_changes_with_content_and_only_with_content(self, write_policy, policy):
        from tests.conftest import POLICY

        again = load_policy(write_policy(POLICY, "again.yaml"))
        changed = load_policy(write_policy(POLICY.replace("900", "901"), "changed.yaml"))
        assert again.version == policy.version
        assert changed.version != policy.version

    def test_any_of_and_single_requirements(self, policy):
        sail = policy.dataset("sail")
        assert [r.options for r in sail.require] == [("safe-researcher",), ("gcp", "hsr")]
        assert sail.require[1].label == "any of: gcp, hsr"
        assert sail.cache_ttl == 900

    def test_unknown_dataset_is_a_typed_error_listing_known_ones(self, policy):
        with pytest.raises(UnknownDataset, match="known: certs, open, sail"):
            policy.dataset("nope")


class TestDatasetForPath:
    @pytest.mark.parametrize(
        "path, expected",
        [
            ("/datasets/sail/file.csv", "sail"),
            ("/datasets/sail/", "sail"),
            ("/datasets/sail", "sail"),
            ("/datasets/sail/a/b?x=1#y", "sail"),
            ("https://data.example/datasets/sail/f", "sail"),
            ("/datasets/open/extra/f", "open"),
            ("/datasets/sailing/f", None),
            ("/datasets/open/../sail/secret.csv", "sail"),
            # Forms servers read differently fail closed (app/request_path.py).
            ("/datasets/open/%2e%2e/sail/secret.csv", None),
            ("//datasets//sail//f", None),
            ("/datasets/sail\\..\\open", None),
            ("/other", None),
            ("", None),
            ("datasets/sail/f", None),
        ],
        ids=lambda v: v if isinstance(v, str) and v else repr(v),
    )
    def test_longest_prefix_of_the_normalised_path_wins(self, policy, path, expected):
        found = policy.dataset_for_path(path)
        assert (found.key if found else None) == expected

    def test_normalize_keeps_trailing_slash(self):
        assert normalize_path("/a/b/../c/") == "/a/c/"


class TestRuleMatching:
    def test_title_matching_ignores_case_and_spacing(self, policy, make_qualification):
        rule = policy.qualifications["safe-researcher"]
        assert rule.is_candidate(make_qualification(title="  safe   researcher TRAINING "))
        assert not rule.is_candidate(make_qualification(title="Safe Researcher Training 2"))

    def test_title_pattern_searches_ignoring_case(self, policy, make_qualification):
        rule = policy.qualifications["gcp"]
        assert rule.is_candidate(make_qualification(title="good clinical practice refresher"))
        assert not rule.is_candidate(make_qualification(title="Intro to Good Clinical Practice"))

    def test_external_id_identifies_when_there_is_no_title(self, policy, make_qualification):
        rule = policy.qualifications["hsr"]
        assert rule.is_candidate(
            make_qualification(
                title="Anything", external_ids=[("uri", "https://example.org/quals/hsr")]
            )
        )
        assert not rule.is_candidate(make_qualification(title="Anything"))

    @pytest.mark.parametrize(
        "org_id, matches",
        [
            ("https://ror.org/05x6aa123", True),
            ("05x6aa123", True),
            ("https://ror.org/05X6AA123/", True),
            ("https://ror.org/05x6aa999", False),
            (None, False),
        ],
    )
    def test_organization_matches_full_or_bare_ror_id(
        self, policy, make_qualification, org_id, matches
    ):
        rule = policy.qualifications["safe-researcher"]
        assert rule.matches_organization(make_qualification(org_id=org_id)) is matches

    def test_pre_filter_selects_only_items_the_dataset_could_use(self, policy, make_qualification):
        sail = policy.dataset("sail")
        assert policy.is_candidate(sail, make_qualification(title="Safe Researcher Training"))
        assert policy.is_candidate(sail, make_qualification(title="Good Clinical Practice"))
        assert not policy.is_candidate(sail, make_qualification(title="PhD in Psychoceramics"))
        assert not policy.is_candidate(policy.dataset("open"), make_qualification(owner=RESEARCHER))


class TestHostileTitles:
    def test_a_catastrophic_pattern_is_run_in_linear_time(self, write_policy, make_qualification):
        # With Python's backtracking engine this search would take longer than the age of
        # the universe; RE2 answers at once, so the test simply finishing is the proof.
        policy = load_policy(
            write_policy(
                """
                version: 1
                qualifications:
                  q: {title_pattern: '^(a+)+$', sources: [self-asserted]}
                datasets:
                  d: {paths: [/d/], require: [q]}
                """
            )
        )
        rule = policy.qualifications["q"]
        assert not rule.is_candidate(make_qualification(title="a" * 5000 + "!"))
        assert rule.is_candidate(make_qualification(title="A" * 5000))

    def test_a_pattern_re2_cannot_run_is_a_problem_with_its_line(self, write_policy):
        path = write_policy(
            """
            version: 1
            qualifications:
              q: {title_pattern: 'Safe (?!Harbour)', sources: [self-asserted]}
            datasets:
              d: {paths: [/d/], require: [q]}
            """
        )
        with pytest.raises(PolicyError) as raised:
            load_policy(path)
        [problem] = raised.value.problems
        assert (problem.line, problem.key) == (3, "qualifications.q.title_pattern")
        assert "RE2 syntax" in problem.message


class TestPolicyFiles:
    def test_a_file_over_the_size_cap_is_a_problem_not_a_load(self, tmp_path):
        from app.policy import MAX_POLICY_BYTES

        path = tmp_path / "huge.yaml"
        path.write_text("version: 1\n# " + "x" * MAX_POLICY_BYTES + "\n")
        with pytest.raises(PolicyError, match="may be at most"):
            load_policy(path)

    @pytest.mark.parametrize("kind", ["fifo", "device"])
    def test_a_path_that_is_no_regular_file_is_a_problem_not_a_hang(self, tmp_path, kind):
        # A FIFO waited for a writer; /dev/zero (0 bytes to stat()) was read until
        # memory ran out.
        import os

        path = tmp_path / "policy.yaml"
        if kind == "fifo":
            os.mkfifo(path)
        else:
            path.symlink_to("/dev/zero")
        with pytest.raises(PolicyError) as raised:
            load_policy(path)
        assert [p.message for p in raised.value.problems] == ["is not a regular file"]

    def test_a_name_with_a_newline_at_its_end_is_refused(self, write_policy):
        # Python's $ matches before a final newline; the CSV export then put the name in
        # a Content-Disposition header.
        text = textwrap.dedent(
            """
            version: 1
            qualifications:
              srt: {title: X, sources: [self-asserted]}
            datasets:
              "d\\n": {paths: [/d/], require: [srt]}
            """
        )
        with pytest.raises(PolicyError) as raised:
            load_policy(write_policy(text))
        assert "names use letters" in raised.value.problems[0].message

    def test_the_c_loader_is_used_when_pyyaml_has_it(self):
        import yaml

        from app.policy import SafeLoader

        assert SafeLoader is getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    def test_a_reload_happens_off_the_request_path_and_swaps_when_ready(self, write_policy):
        from app.policy import PolicyFile

        path = write_policy(POLICY)
        watched = PolicyFile(path, check_interval=0)
        before = watched.current
        path.write_text(POLICY.replace("cache_ttl: 900", "cache_ttl: 901"))
        # The call that notices the change starts the reload and answers at once with
        # the policy in force; a later call swaps in the new one.
        assert watched.refresh() is False
        assert watched.current is before or watched.current.version != before.version
        assert watched.wait(timeout=10) is True
        assert watched.current.dataset("sail").cache_ttl == 901


class TestAuthoringHelp:
    """Problems a steward can fix from the message alone."""

    @pytest.mark.parametrize(
        "text, line, message",
        [
            (
                "version: 1\nqualifications:\n\tsrt: {title: X, sources: [self-asserted]}\n",
                3,
                "YAML syntax error at column 1: a tab character; hint: YAML indents with "
                "spaces only: replace the tab with spaces",
            ),
            (
                "version: 1\nqualifications:\n  srt:\n    title: X\n   sources: [self-asserted]\n",
                5,
                "YAML syntax error at column 4: this line is out of line with the keys above it;"
                " hint: indent it like the other keys of the mapping on line 3, which start in "
                "column 3",
            ),
            (
                "version: 1\nqualifications:\n  srt:\n    title X\n    sources: [self-asserted]\n",
                4,
                "YAML syntax error at column 5: 'title X' has no colon after its key",
            ),
            (
                "version: 1\nqualifications\n  srt: {title: X}\n",
                2,
                "YAML syntax error at column 1: 'qualifications' is not followed by a colon",
            ),
            (
                "version: 1\nqualifications:\n  srt: {title: X, sources: [self-asserted}\n",
                3,
                "the list opened with '[' on line 3 is not closed; hint: close it with ']'",
            ),
            (
                "version: 1\nqualifications:\n  srt:\n    title: 'Safe Researcher\n",
                4,
                "YAML syntax error at column 12: this quote is never closed",
            ),
            (
                "version: 1\nqualifications:\n  srt:\n    title: Safe: Researcher\n",
                4,
                "a value holds ': '; hint: put the value in quotes: title: 'Safe: Researcher'",
            ),
            (
                "version: 1\nqualifications:\n  srt:\n    description: 2025-02-30\n",
                4,
                "'2025-02-30' is not a date in the calendar",
            ),
            (
                "version: 1\nqualifications:\n  srt:\n    title: a\x00b\n",
                4,
                "YAML syntax error at column 13: the character U+0000, which YAML does not "
                "allow; hint: delete it",
            ),
            (
                # libyaml counts bytes: the accents before it must not move it.
                "version: 1\nqualifications:\n  srt:\n    title: Università éééé\n"
                "    description: a\x07b\n",
                5,
                "YAML syntax error at column 19: the character U+0007",
            ),
        ],
        ids=[
            "tab",
            "indentation",
            "missing-colon",
            "bare-key",
            "unclosed-list",
            "quote",
            "colon-in-value",
            "no-such-day",
            "nul",
            "bell-after-accents",
        ],
    )
    def test_yaml_errors_say_where_what_and_how_to_fix_it(self, write_policy, text, line, message):
        path = write_policy(text)
        with pytest.raises(PolicyError) as raised:
            load_policy(path)
        [problem] = raised.value.problems
        assert (problem.line, problem.key) == (line, "(yaml)")
        assert message in problem.message

    def test_a_key_that_overrides_a_merged_one_is_no_duplicate(self, write_policy):
        policy = load_policy(
            write_policy(
                """
                version: 1
                qualifications:
                  srt: {title: X, sources: [self-asserted]}
                datasets:
                  sail: &common
                    paths: [/sail/]
                    require: [srt]
                    cache_ttl: 60
                  other:
                    <<: *common
                    paths: [/other/]
                """
            )
        )
        assert policy.dataset("other").cache_ttl == 60
        assert policy.dataset_for_path("/other/x").key == "other"
        assert policy.dataset_for_path("/sail/x").key == "sail"

    @pytest.mark.parametrize(
        "name, kind, written",
        [
            ("true", "true or false", "true"),
            ("no", "true or false", "false"),
            ("2024", "a number", "2024"),
            ("~", "nothing (null)", "null"),
            ("2024-01-01", "a date", "2024-01-01"),
        ],
    )
    def test_a_name_yaml_reads_as_no_text_says_to_quote_it(self, write_policy, name, kind, written):
        text = "version: 1\nqualifications:\n  srt: {title: X, sources: [self-asserted]}\n"
        text += f"  {name}: {{title: Y, sources: [self-asserted]}}\n"
        text += f"datasets:\n  {name}: {{paths: [/d/], require: [srt]}}\n"
        with pytest.raises(PolicyError) as raised:
            load_policy(write_policy(text))
        said = f"YAML reads this name as {kind}, not as text: put it in quotes"
        assert [(p.line, p.key, p.message) for p in raised.value.problems] == [
            (4, f"qualifications.{written}", said),
            (6, f"datasets.{written}", said),
        ]

    def test_unknown_keys_and_names_suggest_what_was_meant(self, write_policy):
        path = write_policy(
            """
            version: 1
            qualifications:
              srt: {titel: X, sources: [self_asserted]}
              gcp: {title: G, sources: [ukds]}
            datasets:
              d: {paths: [/d/], require: [srt, gpc], cache-ttl: 60}
            """
        )
        with pytest.raises(PolicyError) as raised:
            load_policy(path)
        assert [str(p) for p in raised.value.problems] == [
            f"{path}:3: qualifications.srt.titel: unknown key: did you mean 'title'? (allowed "
            "here: title, title_pattern, organization, external_id, url_prefix, sources, "
            "max_age_days, end_date, description, issue, researcher_status)",
            f"{path}:3: qualifications.srt: needs at least one of title, title_pattern, "
            "external_id",
            f"{path}:3: qualifications.srt.sources[0]: unknown source 'self_asserted': did you "
            "mean 'self-asserted'? (known: self-asserted, self-issued)",
            f"{path}:4: qualifications.gcp.sources[0]: unknown source 'ukds' (known: "
            "self-asserted, self-issued)",
            f"{path}:6: datasets.d.cache-ttl: unknown key: did you mean 'cache_ttl'? (allowed "
            "here: title, paths, require, cache_ttl, description, visa)",
            f"{path}:6: datasets.d.require[1]: unknown qualification 'gpc': did you mean 'gcp'? "
            "(known: gcp, srt)",
        ]

    @pytest.mark.parametrize("typo", ["qualifcations", "Qualifications", "qualification"])
    def test_a_misspelt_section_is_one_problem_not_a_cascade(self, write_policy, typo):
        path = write_policy(
            f"""
            version: 1
            {typo}:
              srt: {{title: X, sources: [self-asserted]}}
            datasets:
              a: {{paths: [/a/], require: [srt]}}
              b: {{paths: [/b/], require: [srt, {{any_of: [srt]}}]}}
            """
        )
        with pytest.raises(PolicyError) as raised:
            load_policy(path)
        assert [str(p) for p in raised.value.problems] == [
            f"{path}:2: {typo}: unknown key: did you mean 'qualifications'? (allowed here: "
            "version, organisation, sources, qualifications, datasets)"
        ]

    def test_a_misspelt_version_is_not_also_missing(self, write_policy):
        path = write_policy("verison: 1\nqualifications: {}\n")
        with pytest.raises(PolicyError) as raised:
            load_policy(path)
        assert [p.key for p in raised.value.problems] == ["verison"]


class TestVisaSettings:
    """``organisation``, datasets' ``visa`` and qualifications' ``researcher_status``:
    the URL claims of the GA4GH visas this service issues (app/passports.py)."""

    VALID = """
        version: 1
        organisation: https://example.org/dac
        qualifications:
          srt:
            title: Safe Researcher Training
            sources: [self-asserted]
            researcher_status: https://doi.org/10.1038/s41431-018-0219-y
        datasets:
          sail:
            paths: [/datasets/sail/]
            require: [srt]
            visa: {value: "https://example.org/datasets/sail", source: "https://example.org/dac/1"}
          plain:
            paths: [/datasets/plain/]
            require: [srt]
        """

    def test_they_load(self, write_policy):
        policy = load_policy(write_policy(self.VALID))
        assert policy.organisation == "https://example.org/dac"
        assert policy.qualifications["srt"].researcher_status == (
            "https://doi.org/10.1038/s41431-018-0219-y"
        )
        sail, plain = policy.datasets["sail"], policy.datasets["plain"]
        assert (sail.visa_value, sail.visa_source) == (
            "https://example.org/datasets/sail",
            "https://example.org/dac/1",
        )
        assert (plain.visa_value, plain.visa_source) == (None, None)

    @pytest.mark.parametrize(
        "old, new",
        [
            ("organisation: https://example.org/dac", "organisation: example.org"),
            ("organisation: https://example.org/dac", "organisation: [https://example.org]"),
            ("researcher_status: https://doi", "researcher_status: ftp://doi"),
            ('source: "https://example.org/dac/1"', f'source: "https://example.org/{"x" * 250}"'),
            ('value: "https://example.org/datasets/sail"', 'value: "https://user@evil.org/"'),
            ('value: "https://example.org/datasets/sail"', 'value: "https://example.org/a b"'),
        ],
    )
    def test_a_claim_that_is_no_short_url_is_refused_with_its_line(self, write_policy, old, new):
        text = textwrap.dedent(self.VALID).replace(old, new)
        assert text != textwrap.dedent(self.VALID)
        path = write_policy(text)
        with pytest.raises(PolicyError) as raised:
            load_policy(path)
        [problem] = raised.value.problems
        assert "must be an https URL of at most 255 characters" in problem.message
        rows = path.read_text().splitlines()
        assert problem.line == next(n for n, row in enumerate(rows, 1) if new in row)

    def test_two_datasets_granting_one_value_are_refused(self, write_policy):
        # `plain`, last in the file, gets `sail`'s value.
        text = textwrap.dedent(self.VALID)
        text += '    visa: {value: "https://example.org/datasets/sail"}\n'
        path = write_policy(text)
        with pytest.raises(PolicyError) as raised:
            load_policy(path)
        [problem] = raised.value.problems
        assert problem.key == "datasets.plain.visa.value"
        assert problem.message == (
            "dataset 'sail' grants the same value: a visa for one would open both"
        )

    def test_organisation_is_said_once(self, tmp_path):
        (tmp_path / "a.yaml").write_text("version: 1\norganisation: https://a.example\n")
        (tmp_path / "b.yaml").write_text("version: 1\norganisation: https://b.example\n")
        with pytest.raises(PolicyError) as raised:
            load_policy(tmp_path)
        assert "defined twice" in str(raised.value.problems[0])
