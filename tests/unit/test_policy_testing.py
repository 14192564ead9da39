"""Policy tests (``*.test.yaml``) and ``gatekeeper policy test``."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli import main
from app.errors import PolicyError
from app.fuzzy_date import FuzzyDate
from app.policy import load_policy
from app.policy.loading import policy_files
from app.policy.testing import TEST_SERVICE_CLIENT_ID, files_beside, load_tests, run_tests
from app.qualifications import Qualification
from tests.conftest import NIHR, POLICY, PORTAL, UKDS

REPO = Path(__file__).parents[2]
TODAY = dt.date(2026, 6, 1)

PASSING = """
today: 2026-06-01
researchers:
  amara:
    qualifications:
      - title: Safe Researcher Training
        source: ukds
        organization: https://ror.org/05x6aa123
        start: 2025-01
        end: 2027-12-31
      - title: Good Clinical Practice
        source: nihr
  ben:
    qualifications:
      - title: Safe Researcher Training
        source: self-asserted
        organization: https://ror.org/05x6aa123
cases:
  - {researcher: amara, dataset: sail, expect: allow}
  - {researcher: ben, dataset: sail, expect: deny, reasons: [wrong_source]}
"""


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def policy_dir(tmp_path):
    """The test policy in a directory, with a test file beside it."""
    root = tmp_path / "policy"
    root.mkdir()
    (root / "policy.yaml").write_text(textwrap.dedent(POLICY).lstrip())

    def write_tests(text: str, name: str = "sail.test.yaml") -> Path:
        path = root / name
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    write_tests.root = root
    return write_tests


def run(runner, *args):
    return runner.invoke(main, ["policy", "test", *map(str, args)])


def researchers(policy_dir, text):
    path = policy_dir(text)
    [loaded] = load_tests([path], load_policy(policy_dir.root), TODAY)
    return loaded


class TestShippedExamples:
    def test_the_example_policies_pass_their_own_tests(self, runner):
        # `make test` runs this: the shipped tests run through the command itself.
        result = run(runner, REPO / "policies")
        assert result.exit_code == 0, result.output
        assert result.output.splitlines()[-1].endswith(" passed, 0 failed")

    def test_the_example_tests_cover_every_dataset_allowed_and_refused(self):
        policy = load_policy(REPO / "policies")
        files = load_tests(files_beside(REPO / "policies"), policy, TODAY)
        cases = [case for f in files for case in f.cases]
        for dataset in policy.datasets:
            assert {c.allow for c in cases if c.dataset == dataset} == {True, False}, dataset

    def test_test_files_are_never_loaded_as_policy(self):
        names = [p.name for p in policy_files(REPO / "policies")]
        assert names and not [n for n in names if n.endswith(".test.yaml")]
        assert files_beside(REPO / "policies")

    def test_a_directory_of_tests_only_holds_no_policy(self, tmp_path):
        (tmp_path / "a.test.yaml").write_text(PASSING)
        with pytest.raises(PolicyError, match=r"no \*\.yaml files"):
            load_policy(tmp_path)


class TestRunning:
    def test_passing_cases_exit_0_with_the_count(self, runner, policy_dir):
        policy_dir(PASSING)
        result = run(runner, policy_dir.root)
        assert result.exit_code == 0, result.output
        assert result.output == "2 passed, 0 failed\n"

    def test_a_failing_case_prints_where_why_and_the_explanation_and_exits_1(
        self, runner, policy_dir
    ):
        path = policy_dir(
            PASSING.replace("dataset: sail, expect: deny", "dataset: sail, expect: allow")
        )
        result = run(runner, policy_dir.root)
        assert result.exit_code == 1
        lines = result.output.splitlines()
        assert lines[0] == f"FAILED {path}:19: ben on sail: expected allow, got deny"
        assert lines[1] == '    0000-0002-1825-0097 may not open "SAIL cohort extract" (sail).'
        assert (
            '          put-code 1 "Safe Researcher Training" does not count: added by the '
            "researcher; this dataset needs it from UK Data Service or this service." in lines
        )
        assert lines[-1] == "1 passed, 1 failed"

    def test_an_expected_reason_that_is_not_given_fails_the_case(self, runner, policy_dir):
        policy_dir(PASSING.replace("reasons: [wrong_source]", "reasons: [wrong_source, expired]"))
        result = run(runner, policy_dir.root)
        assert result.exit_code == 1
        assert "ben on sail: expected reasons not given: expired" in result.output

    def test_a_named_case_is_reported_by_its_name(self, runner, policy_dir):
        policy_dir(
            PASSING.replace(
                "  - {researcher: ben, dataset: sail, expect: deny, reasons: [wrong_source]}",
                "  - {name: typed in himself, researcher: ben, dataset: sail, expect: allow}",
            )
        )
        result = run(runner, policy_dir.root)
        assert "typed in himself (ben on sail): expected allow, got deny" in result.output

    def test_the_cases_are_judged_on_the_files_day(self, runner, policy_dir):
        # amara's Safe Researcher Training ends 2027-12-31: on 2028-01-01 it has expired.
        policy_dir(PASSING.replace("today: 2026-06-01", "today: 2028-01-01"))
        result = run(runner, policy_dir.root)
        assert result.exit_code == 1
        assert "it expired on 2027-12-31" in result.output

    def test_tests_may_come_from_another_path(self, runner, policy_dir, tmp_path):
        elsewhere = tmp_path / "elsewhere.yaml"
        elsewhere.write_text(PASSING)
        result = run(runner, policy_dir.root / "policy.yaml", "--tests", elsewhere)
        assert result.exit_code == 0, result.output
        assert result.output == "2 passed, 0 failed\n"

    def test_a_policy_file_has_its_tests_in_name_test_yaml(self, runner, policy_dir):
        (policy_dir.root / "policy.test.yaml").write_text(PASSING)
        result = run(runner, policy_dir.root / "policy.yaml")
        assert result.exit_code == 0, result.output

    def test_several_policies_each_run_their_own_tests(self, runner, policy_dir):
        policy_dir(PASSING)
        result = run(runner, policy_dir.root, REPO / "policies")
        assert result.exit_code == 0, result.output
        shipped = run(runner, REPO / "policies").output.splitlines()[-1].split()[0]
        assert result.output.splitlines()[-1] == f"{int(shipped) + 2} passed, 0 failed"

    def test_json_reports_every_case_with_its_decision(self, runner, policy_dir):
        policy_dir(PASSING.replace("dataset: sail, expect: deny", "dataset: sail, expect: allow"))
        result = run(runner, policy_dir.root, "--json")
        assert result.exit_code == 1
        report = json.loads(result.stdout)
        assert (report["passed"], report["failed"]) == (1, 1)
        ben = report["cases"][1]
        assert (ben["researcher"], ben["passed"], ben["allowed"]) == ("ben", False, False)
        assert ben["decision"]["requirements"][0]["candidates"][0]["reasons"][0]["reason"] == (
            "wrong_source"
        )
        assert result.stderr == "1 passed, 1 failed\n"


class TestBrokenFiles:
    def test_every_problem_in_a_test_file_is_listed_with_its_line_and_exit_2(
        self, runner, policy_dir
    ):
        path = policy_dir(
            """
            today: 2026-06-01
            researchers:
              amara:
                qualifications:
                  - title: Safe Researcher Training
                    source: ukdss
                    start: 2025-02-30
                  - source: nihr
                  - title: Good Clinical Practice
                    sorce: nihr
            cases:
              - {researcher: amra, dataset: sail, expect: allow}
              - {researcher: amara, dataset: saill, expect: yes}
              - {researcher: amara, dataset: sail, expect: deny, reasons: [expird]}
            """
        )
        result = run(runner, policy_dir.root)
        assert result.exit_code == 2
        out = result.stdout
        assert (
            f"{path}:6: researchers.amara.qualifications[0].source: unknown source 'ukdss'" in out
        )
        assert "did you mean 'ukds'?" in out
        assert (
            f"{path}:7: researchers.amara.qualifications[0].start: 2025-02-30: there is no such day"
            in out
        )
        assert (
            f"{path}:8: researchers.amara.qualifications[1]: needs a title or an external_id" in out
        )
        assert (
            f"{path}:10: researchers.amara.qualifications[2].sorce: unknown key: did you mean "
            "'source'?" in out
        )
        assert (
            f"{path}:12: cases[0].researcher: unknown researcher 'amra': did you mean 'amara'?"
            in out
        )
        assert f"{path}:13: cases[1].dataset: unknown dataset 'saill': did you mean 'sail'?" in out
        assert f"{path}:13: cases[1].expect: must be allow or deny" in out
        assert (
            f"{path}:14: cases[2].reasons[0]: unknown reason code 'expird': did you mean 'expired'?"
            in out
        )
        assert len(out.splitlines()) == 8
        assert result.stderr == "8 problems: no test was run\n"

    def test_a_misspelt_section_is_one_problem_not_one_per_case(self, runner, policy_dir):
        path = policy_dir(PASSING.replace("researchers:", "reseachers:"))
        result = run(runner, policy_dir.root)
        assert result.exit_code == 2
        assert result.stdout.splitlines() == [
            f"{path}:2: reseachers: unknown key: did you mean 'researchers'? "
            "(allowed here: today, service_client_id, researchers, cases)"
        ]

    def test_a_broken_policy_exits_2_with_its_problems(self, runner, policy_dir):
        policy_dir(PASSING)
        (policy_dir.root / "policy.yaml").write_text("version: 1\ndatasets:\n  d: {paths: [/d/]}\n")
        result = run(runner, policy_dir.root)
        assert result.exit_code == 2
        assert (
            f"{policy_dir.root / 'policy.yaml'}:3: datasets.d.require: is required" in result.stdout
        )

    def test_a_policy_without_tests_exits_2(self, runner, policy_dir):
        result = run(runner, policy_dir.root)
        assert result.exit_code == 2
        assert "no *.test.yaml files" in result.stdout

    def test_a_date_orcid_could_not_send_is_a_problem(self, policy_dir):
        path = policy_dir(PASSING.replace("end: 2027-12-31", "end: 2027-13"))
        with pytest.raises(PolicyError) as raised:
            load_tests([path], load_policy(policy_dir.root), TODAY)
        [problem] = raised.value.problems
        assert (problem.line, problem.key) == (9, "researchers.amara.qualifications[0].end")

    @pytest.mark.parametrize(
        "old, new, key, says",
        [
            ("{researcher: amara,", "{researcher: [amara],", "cases[0].researcher", "must be"),
            (
                "dataset: sail, expect: allow",
                "dataset: {x: 1}, expect: allow",
                "cases[0].dataset",
                "must be",
            ),
            ("expect: allow}", "expect: [allow]}", "cases[0].expect", "must be allow or deny"),
            (
                "reasons: [wrong_source]",
                "reasons: [{a: 1}]",
                "cases[1].reasons[0]",
                "must be a reason code",
            ),
            (
                "start: 2025-01",
                "start: '0000'",
                "researchers.amara.qualifications[0].start",
                "0000: there is no year 0",
            ),
        ],
        ids=["researcher-list", "dataset-mapping", "expect-list", "reason-mapping", "year-0"],
    )
    def test_a_value_of_the_wrong_kind_is_a_problem_not_a_traceback(
        self, runner, policy_dir, old, new, key, says
    ):
        text = PASSING.replace(old, new)
        assert text != PASSING
        policy_dir(text)
        result = run(runner, policy_dir.root)
        assert result.exit_code == 2, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert f": {key}: {says}" in result.output

    def test_an_alias_bomb_in_the_reasons_is_not_spelt_out(self, runner, policy_dir):
        # Six levels of ten: a million strings once repr'd (350 MB at six, ten times that
        # per level more).
        levels = ["      - &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
        levels += [f"      - &l{n} [{', '.join([f'*l{n - 1}'] * 10)}]" for n in range(1, 7)]
        text = PASSING.replace(
            "  - {researcher: ben, dataset: sail, expect: deny, reasons: [wrong_source]}",
            "  - researcher: ben\n    dataset: sail\n    expect: deny\n    reasons:\n"
            + "\n".join(line[2:] for line in levels),
        )
        policy_dir(text)
        result = run(runner, policy_dir.root)
        assert result.exit_code == 2, result.output
        assert len(result.output) < 10_000
        assert "must be a reason code" in result.output


class TestItemsAreParsedAsOrcidSendsThem:
    """Each test qualification is ORCID's JSON read by the live parser."""

    def items(self, policy_dir, *entries):
        body = "\n".join(f"      - {e}" for e in entries)
        loaded = researchers(
            policy_dir,
            f"researchers:\n  r:\n    orcid: 0000-0002-1694-233X\n    qualifications:\n{body}\n"
            "cases:\n  - {researcher: r, dataset: sail, expect: deny}\n",
        )
        return loaded.researchers["r"].qualifications

    @pytest.mark.parametrize(
        "source, expected",
        [
            ("ukds", {"source_client_id": UKDS}),
            ("self-asserted", {"source_orcid": "0000-0002-1694-233X"}),
            ("self-issued", {"source_client_id": TEST_SERVICE_CLIENT_ID}),
            ("client:APP-ELSEWHERE0000001", {"source_client_id": "APP-ELSEWHERE0000001"}),
            ("client:0000-0002-1825-0097", {"source_orcid": "0000-0002-1825-0097"}),
            ("unknown", {"unknown": True}),
        ],
        ids=["policy-source", "self-asserted", "self-issued", "client", "legacy-client", "unknown"],
    )
    def test_each_kind_of_source(self, policy_dir, source, expected):
        [item] = self.items(policy_dir, f"{{title: T, source: '{source}'}}")
        assert isinstance(item, Qualification)
        for field, value in expected.items():
            assert getattr(item.source, field) == value

    def test_an_item_written_on_behalf_of_another_client(self, policy_dir):
        [item] = self.items(
            policy_dir, f"{{title: T, source: 'client:{PORTAL}', on_behalf_of: nihr}}"
        )
        assert (item.source.source_client_id, item.source.assertion_origin_client_id) == (
            PORTAL,
            NIHR,
        )

    def test_dates_identifiers_and_organisation(self, policy_dir):
        [item] = self.items(
            policy_dir,
            "{title: T, start: 2025-01, end: 2027, added: 2025-01-15, url: 'https://e.org/c/1', "
            "organization: {source: GRID, id: grid.5337.2, name: Uni}, "
            "external_id: {type: uri, value: 'https://e.org/q', relationship: part-of}}",
        )
        assert item.start == FuzzyDate(2025, 1) and item.end == FuzzyDate(2027)
        assert item.created == dt.datetime(2025, 1, 15, tzinfo=dt.UTC)
        assert item.url == "https://e.org/c/1"
        assert (item.organization.disambiguation_source, item.organization.name) == ("GRID", "Uni")
        [ext] = item.external_ids
        assert (ext.type, ext.value, ext.relationship) == ("uri", "https://e.org/q", "part-of")

    def test_the_service_client_id_may_be_given(self, policy_dir):
        text = PASSING.replace("source: ukds", "source: self-issued", 1)
        text = "service_client_id: APP-GATEKEEPER000001\n" + text
        loaded = researchers(policy_dir, text)
        [result, _] = run_tests(load_policy(policy_dir.root), [loaded])
        assert result.passed
        item = loaded.researchers["amara"].qualifications[0]
        assert item.source.source_client_id == "APP-GATEKEEPER000001"

    def test_without_a_day_the_callers_today_is_used(self, policy_dir):
        loaded = researchers(policy_dir, PASSING.replace("today: 2026-06-01\n", ""))
        assert loaded.today == TODAY


def test_a_self_issued_test_item_carries_the_id_of_the_qualification_whose_title_it_has(
    tmp_path, runner
):
    # Not every issued qualification whose rule its title matches: in production that
    # item opens only its own (tests/unit/test_issuing_attacks.py TWO_AGREEMENTS).
    from tests.unit.test_issuing_attacks import TWO_AGREEMENTS

    root = tmp_path / "policy"
    root.mkdir()
    (root / "policy.yaml").write_text(textwrap.dedent(TWO_AGREEMENTS).lstrip())
    (root / "policy.test.yaml").write_text(
        textwrap.dedent(
            """
            today: 2026-06-01
            researchers:
              accepted-a:
                qualifications:
                  - {title: Accepted the data access agreement, source: self-issued}
            cases:
              - {researcher: accepted-a, dataset: a, expect: allow}
              - {researcher: accepted-a, dataset: b, expect: deny}
            """
        ).lstrip()
    )
    result = run(runner, root)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "2 passed, 0 failed"
