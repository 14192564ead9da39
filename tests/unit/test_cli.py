import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli import main
from tests import orcid_json
from tests.conftest import POLICY, RESEARCHER, UKDS, qualified_items

BROKEN = Path(__file__).parent.parent / "data" / "policies" / "broken"
REPO = Path(__file__).parents[2]


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def policy_file(write_policy):
    return write_policy(POLICY)


@pytest.fixture
def record_file(tmp_path):
    def write(items, **extra):
        data = {
            "orcid": RESEARCHER,
            "qualifications": orcid_json.summaries(RESEARCHER, items),
            "items": {str(i["put-code"]): i for i in items},
            **extra,
        }
        path = tmp_path / "record.json"
        path.write_text(json.dumps(data))
        return str(path)

    return write


def explain(runner, policy_file, *args):
    return runner.invoke(main, ["explain", "--policy", str(policy_file), *args])


def explain_record(runner, policy_file, record, *extra, dataset="sail"):
    """`gatekeeper explain` for the test researcher against a saved record."""
    args = ["--orcid", RESEARCHER, "--dataset", dataset, "--record", record, *extra]
    return explain(runner, policy_file, *args)


class TestPolicyCheck:
    def test_a_good_policy_exits_0(self, runner, policy_file):
        result = runner.invoke(main, ["policy", "check", str(policy_file)])
        assert result.exit_code == 0
        assert "OK, 3 datasets" in result.output

    def test_a_broken_policy_lists_every_problem_and_exits_1(self, runner):
        path = BROKEN / "bad-values.yaml"
        result = runner.invoke(main, ["policy", "check", str(path)])
        assert result.exit_code == 1
        lines = [line for line in result.stdout.splitlines() if line]
        assert len(lines) == 7
        assert (
            f"{path}:11: sources.ukds.client_ids[1]: 'UKDS-1' is not an ORCID client ID" in lines[0]
        )
        assert "7 problems" in result.stderr

    def test_policy_path_comes_from_the_environment(self, runner, policy_file):
        result = runner.invoke(main, ["policy", "check"], env={"POLICY_PATH": str(policy_file)})
        assert result.exit_code == 0, result.output


class TestExplain:
    def test_allowed_exits_0(self, runner, policy_file, record_file):
        result = explain_record(runner, policy_file, record_file(qualified_items()))
        assert result.exit_code == 0, result.output
        assert f'{RESEARCHER} may open "SAIL cohort extract"' in result.output

    def test_refused_exits_1_with_reasons(self, runner, policy_file, record_file):
        items = qualified_items()[:1]
        result = explain_record(runner, policy_file, record_file(items))
        assert result.exit_code == 1
        assert "may not open" in result.output and "no matching qualification" in result.output

    def test_json_output_carries_the_contract_fields(self, runner, policy_file, record_file):
        result = explain(
            runner,
            policy_file,
            "--orcid",
            f"https://orcid.org/{RESEARCHER}",
            "--dataset",
            "sail",
            "--record",
            record_file(qualified_items()),
            "--json",
        )
        data = json.loads(result.output)
        assert data["allowed"] is True and data["orcid"] == RESEARCHER
        assert data["dataset"] == "sail" and data["policy_version"]
        assert [r["put_code"] for r in data["requirements"]] == [1, 2]
        assert data["valid_until"] and data["decided_at"]

    def test_unreadable_record_is_a_refusal_exit_1(self, runner, policy_file, record_file):
        path = record_file([], error=orcid_json.error(409, 9044, "deactivated"))
        result = explain_record(runner, policy_file, path, "--json")
        assert result.exit_code == 1
        assert json.loads(result.output)["error"]["reason"] == "record_deactivated"

    @pytest.mark.parametrize(
        "args, message",
        [
            (["--orcid", "0000-0002-1825-0098", "--dataset", "sail"], "check digit is wrong"),
            (["--orcid", RESEARCHER, "--dataset", "nope"], "unknown dataset 'nope'"),
            (
                ["--orcid", RESEARCHER, "--dataset", "sail", "--record", "/nonexistent.json"],
                "cannot read /nonexistent.json",
            ),
        ],
        ids=["invalid-id", "unknown-dataset", "missing-record"],
    )
    def test_usage_errors_exit_2_with_one_line(self, runner, policy_file, args, message):
        result = explain(runner, policy_file, *args)
        assert result.exit_code == 2
        assert result.stdout == ""
        [line] = result.stderr.splitlines()
        assert line.startswith("Error: ") and message in line

    @pytest.mark.parametrize(
        "error, message",
        [
            ("boom", "'error' must be an ORCID error object"),
            (
                {"response-code": "abc"},
                "'error' response-code must be a whole number, like 409, not 'abc'",
            ),
        ],
        ids=["not-an-object", "code-not-a-number"],
    )
    def test_a_saved_error_of_the_wrong_shape_exits_2_with_one_line(
        self, runner, policy_file, record_file, error, message
    ):
        path = record_file([], error=error)
        result = explain(
            runner, policy_file, "--orcid", RESEARCHER, "--dataset", "sail", "--record", path
        )
        assert result.exit_code == 2, result.exception
        assert result.stdout == ""
        [line] = result.stderr.splitlines()
        assert line == f"Error: {path}: {message}"
        assert "Traceback" not in result.output

    def test_a_date_beyond_orcids_range_is_a_refusal_exit_1(self, runner, policy_file, record_file):
        other = qualified_items()[1]
        far = orcid_json.qualification(
            1,
            owner=RESEARCHER,
            title="Safe Researcher Training",
            src=orcid_json.source(client_id=UKDS),
            end="9999-12-31",
        )
        path = record_file([far, other])
        result = explain_record(runner, policy_file, path, "--json")
        assert result.exit_code == 1, result.exception
        decision = json.loads(result.output)
        assert decision["error"] is None  # one bad item refuses what it could have met
        srt = decision["requirements"][0]
        assert not srt["met"]
        assert [r["reason"] for r in srt["candidates"][0]["reasons"]] == ["unreadable_item"]
        assert decision["requirements"][1]["met"]

    def test_a_broken_policy_exits_2_with_one_line(self, runner):
        result = explain(runner, BROKEN / "syntax.yaml", "--orcid", RESEARCHER, "--dataset", "x")
        assert result.exit_code == 2
        [line] = result.stderr.splitlines()
        assert "YAML syntax error" in line and "gatekeeper policy check" in line

    def test_a_bad_setting_exits_2_naming_the_variable(self, runner, policy_file):
        result = runner.invoke(
            main,
            ["explain", "--policy", str(policy_file), "--orcid", RESEARCHER, "--dataset", "sail"],
            env={"ORCID_API_URL": "ftp://x"},
        )
        assert result.exit_code == 2 and "ORCID_API_URL" in result.stderr

    def test_the_shipped_example_explains(self, runner):
        record = REPO / "app" / "examples" / f"record-{RESEARCHER}.json"
        result = explain(
            runner,
            REPO / "policies",
            "--orcid",
            RESEARCHER,
            "--dataset",
            "sail-cohort",
            "--record",
            str(record),
        )
        assert result.exit_code == 1
        # The command line speaks of the researcher; the web pages speak to them.
        assert "added by the researcher; this dataset needs it from NIHR Learn" in result.output
        assert "yourself" not in result.output and " your " not in result.output


class TestPolicyWarnings:
    def test_risky_but_legal_choices_are_warnings_and_exit_0(self, runner, write_policy):
        path = write_policy(
            """
            version: 1
            qualifications:
              srt: {title: Safe Researcher Training, sources: [self-asserted]}
              gcp: {title_pattern: '^(Good\\s*)+Clinical', sources: [self-asserted]}
            datasets:
              everything: {paths: [/], require: [srt]}
              cohort: {paths: [/cohort/], require: [srt, gcp]}
              inner: {paths: [/cohort/inner/], require: [srt, gcp]}
            """
        )
        result = runner.invoke(main, ["policy", "check", str(path)])
        assert result.exit_code == 0, result.output
        warnings = [line for line in result.stdout.splitlines() if line.startswith("warning: ")]
        assert warnings == [
            f"warning: {path}:4: qualifications.gcp.title_pattern: a quantifier inside a "
            "quantified group (such as (a+)+) is slow in most engines; RE2 keeps it linear "
            "here, but simplify it if you can",
            f"warning: {path}:6: datasets.everything.paths[0]: a dataset at / guards every URL "
            "that no other dataset claims; give each dataset its own prefix",
            f"warning: {path}:7: datasets.cohort.paths[0]: '/cohort/' lies inside '/' (dataset "
            "'everything'), which does not require gcp: a request judged under the shorter "
            "prefix needs less",
            f"warning: {path}:8: datasets.inner.paths[0]: '/cohort/inner/' lies inside '/' "
            "(dataset 'everything'), which does not require gcp: a request judged under the "
            "shorter prefix needs less",
        ]
        assert "OK, 3 datasets" in result.stdout

    def test_a_policy_without_risks_prints_no_warning(self, runner, policy_file):
        result = runner.invoke(main, ["policy", "check", str(policy_file)])
        assert "warning:" not in result.output


class TestOutputEscaping:
    """ORCID strings reach the terminal as text: controls and bidi characters are escaped."""

    HOSTILE = [
        ("\x1b[2J", "\\u001b[2J"),  # ESC: clears the screen
        ("\x07", "\\u0007"),  # BEL
        ("\x7f", "\\u007f"),  # DEL
        ("\x9b31m", "\\u009b31m"),  # C1 CSI: a terminal command without ESC
        ("\n  [met]     forged", "\\u000a  [met]     forged"),  # a forged line
        ("\r", "\\u000d"),
        ("\u202e", "\\u202e"),  # RIGHT-TO-LEFT OVERRIDE
        ("\u202a", "\\u202a"),  # LEFT-TO-RIGHT EMBEDDING
        ("\u2066", "\\u2066"),  # LEFT-TO-RIGHT ISOLATE
        ("\u2069", "\\u2069"),  # POP DIRECTIONAL ISOLATE
        ("\u200e", "\\u200e"),  # LEFT-TO-RIGHT MARK
        ("\u200f", "\\u200f"),  # RIGHT-TO-LEFT MARK
        ("\u061c", "\\u061c"),  # ARABIC LETTER MARK
        ("\u200b", "\\u200b"),  # ZERO WIDTH SPACE
        ("\ufeff", "\\ufeff"),  # BYTE ORDER MARK
        ("\u2028", "\\u2028"),  # LINE SEPARATOR
        ("\U000e0041", "\\U000e0041"),  # TAG LATIN CAPITAL LETTER A
    ]

    @staticmethod
    def record(record_file, title="Good Clinical Practice", org_name="UK Data Service"):
        """The test researcher's record: a met item from UKDS, and a refused GCP item."""
        return record_file(
            [
                orcid_json.qualification(
                    1, owner=RESEARCHER, src=orcid_json.source(client_id=UKDS), org_name=org_name
                ),
                orcid_json.qualification(
                    2, owner=RESEARCHER, title=title, src=orcid_json.source(client_id=UKDS)
                ),
            ]
        )

    @pytest.mark.parametrize(("char", "escaped"), HOSTILE, ids=[repr(c) for c, _ in HOSTILE])
    def test_a_hostile_title_is_printed_escaped(
        self, runner, policy_file, record_file, char, escaped
    ):
        record = self.record(record_file, title=f"Good Clinical Practice{char} x")
        result = explain_record(runner, policy_file, record)
        assert result.exit_code == 1, result.output
        line = f'      put-code 2 "Good Clinical Practice{escaped} x" does not count: '
        assert any(printed.startswith(line) for printed in result.stdout.splitlines())
        assert char not in result.stdout

    @pytest.mark.parametrize(("char", "escaped"), HOSTILE, ids=[repr(c) for c, _ in HOSTILE])
    def test_a_hostile_provider_name_is_printed_escaped(
        self, runner, policy_file, record_file, char, escaped
    ):
        record = self.record(record_file, org_name=f"UK Data{char} Service")
        result = explain_record(runner, policy_file, record)
        met = [line for line in result.stdout.splitlines() if line.startswith("  [met]")]
        assert len(met) == 1, result.stdout
        assert f"from UK Data{escaped} Service" in met[0]
        assert char not in result.stdout

    def test_a_lone_surrogate_prints_escaped_not_as_a_traceback(
        self, runner, policy_file, record_file
    ):
        # JSON may carry "\ud800", which no terminal encoding can print: the parser reads
        # it as U+FFFD.
        result = explain_record(runner, policy_file, self.record(record_file, org_name="UK\ud800"))
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert "from UK\ufffd (put-code 1)" in result.stdout

    def test_every_line_of_the_explanation_is_one_line(self, runner, policy_file, record_file):
        record = self.record(record_file, title="Good Clinical Practice\n  [met]     forged")
        result = explain_record(runner, policy_file, record)
        assert not any(line.startswith("  [met]     forged") for line in result.stdout.splitlines())

    @pytest.mark.parametrize(
        "title",
        [
            "Good Clinical Practice für Ärztinnen",
            "Good Clinical Practice 安全研究",
            "Good Clinical Practice تدريب 🎓",
        ],
        ids=["latin", "cjk", "arabic-and-emoji"],
    )
    def test_letters_of_any_script_print_unchanged(self, runner, policy_file, record_file, title):
        result = explain_record(runner, policy_file, self.record(record_file, title=title))
        assert f'put-code 2 "{title}" does not count:' in result.stdout

    @pytest.mark.parametrize(("char", "escaped"), HOSTILE, ids=[repr(c) for c, _ in HOSTILE])
    def test_json_output_is_ascii_and_keeps_the_title(
        self, runner, policy_file, record_file, char, escaped
    ):
        title = f"Good Clinical Practice{char} x"
        result = explain_record(
            runner, policy_file, self.record(record_file, title=title), "--json"
        )
        assert result.stdout.isascii()
        assert not any(c in result.stdout for c in "\x00\x07\x1b\x7f\r")
        decision = json.loads(result.stdout)
        candidates = [c for r in decision["requirements"] for c in r["candidates"]]
        assert title in [c["title"] for c in candidates]

    def test_a_usage_error_quoting_a_saved_record_is_escaped(
        self, runner, policy_file, record_file
    ):
        record = record_file([], orcid="0000-0002-1825-0098\u202e")
        result = explain_record(runner, policy_file, record)
        assert result.exit_code == 2
        assert "\u202e" not in result.output
        assert "\\u202e" in result.output


class TestExplainReadsLikeASentence:
    def test_times_are_to_the_second_in_utc_and_an_open_ended_item_says_so(
        self, runner, policy_file, record_file
    ):
        result = explain_record(runner, policy_file, record_file(qualified_items()))
        assert result.exit_code == 0, result.output
        last = result.output.splitlines()[-1]
        assert re.fullmatch(
            r"Decided \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC under policy [0-9a-f]{16}; "
            r"holds until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\.",
            last,
        ), last
        assert "no end date." in result.output  # the test items have no end date

    def test_the_command_line_speaks_of_the_researcher(self, runner, policy_file, record_file):
        typed_in = orcid_json.qualification(
            1,
            owner=RESEARCHER,
            title="Safe Researcher Training",
            src=orcid_json.source(orcid=RESEARCHER),
        )
        result = explain_record(runner, policy_file, record_file([typed_in]))
        assert result.exit_code == 1
        assert (
            "added by the researcher; this dataset needs it from UK Data Service or this service"
            in result.output
        )
        assert "What the researcher can do: ask UK Data Service to add" in result.output
        assert "yourself" not in result.output and "your ORCID" not in result.output

    def test_the_pages_words_keep_speaking_to_the_researcher(self, policy, make_qualification):
        from app.decision import decide
        from app.explain import explain_lines, met_sentence
        from tests.conftest import at

        typed_in = make_qualification(1, title="Safe Researcher Training")
        decision = decide(
            policy, policy.dataset("sail"), [typed_in], orcid=RESEARCHER, now=at("2026-11-25")
        )
        text = "\n".join(explain_lines(policy, decision))
        assert "added by yourself; this dataset needs it from" in text
        assert "What to do: ask UK Data Service to add" in text and "your ORCID record" in text
        mine = make_qualification(
            3,
            title="Data Protection Essentials",
            start="2026-06",
            src=orcid_json.source(orcid=RESEARCHER),
        )
        met = decide(policy, policy.dataset("open"), [mine], orcid=RESEARCHER, now=at("2026-11-25"))
        result = met.requirements[0]
        assert "added by yourself" in met_sentence(result, put_code=False)
        assert "added by the researcher" in met_sentence(result, audience="steward")


class TestSeveralPaths:
    def test_policy_check_checks_each_path_and_fails_if_any_is_broken(self, runner, policy_file):
        broken = BROKEN / "unknown-key.yaml"
        result = runner.invoke(main, ["policy", "check", str(policy_file), str(broken)])
        assert result.exit_code == 1
        assert f"{policy_file}: OK, 3 datasets" in result.stdout
        assert f"{broken}:7: qualifications.srt.titel: unknown key: did you mean 'title'?" in (
            result.stdout
        )

    def test_policy_check_passes_when_every_path_is_fine(self, runner, policy_file):
        result = runner.invoke(main, ["policy", "check", str(policy_file), str(REPO / "policies")])
        assert result.exit_code == 0, result.output
        assert len(result.stdout.splitlines()) == 2


class TestVisas:
    RECORD = str(Path(__file__).parents[2] / "app" / "examples" / "record-0000-0002-1825-0097.json")
    ENV = {"PUBLIC_URL": "https://data.example.org", "POLICY_PATH": "policies/"}

    def test_the_visas_a_researcher_would_get_in_words(self, runner):
        result = runner.invoke(
            main, ["visas", "--orcid", RESEARCHER, "--record", self.RECORD], env=self.ENV
        )
        assert result.exit_code == 0, result.output
        assert result.output.startswith(
            "ControlledAccessGrants https://data.example.org/datasets/survey-microdata/ "
            "(source https://data.example.org, by dac) until "
        )
        assert "sail-cohort" not in result.output  # refused: no grant

    def test_as_json_one_visa_per_line_with_the_specs_claims(self, runner):
        result = runner.invoke(
            main,
            ["visas", "--orcid", RESEARCHER, "--record", self.RECORD, "--json"],
            env={**self.ENV, "VISA_LIFETIME": "120"},
        )
        assert result.exit_code == 0, result.output
        [line] = result.output.splitlines()
        claims = json.loads(line)
        assert claims["iss"] == "https://data.example.org"
        assert claims["sub"] == f"https://orcid.org/{RESEARCHER}"
        assert claims["exp"] <= claims["iat"] + 120
        assert claims["ga4gh_visa_v1"]["by"] == "dac"

    @pytest.mark.parametrize(
        "args, env, says",
        [
            (["--orcid", "0000-0002-1825-0096"], ENV, "check digit"),
            (["--orcid", RESEARCHER], {"POLICY_PATH": "policies/", "PUBLIC_URL": ""}, "PUBLIC_URL"),
        ],
    )
    def test_misuse_is_exit_2(self, runner, args, env, says):
        result = runner.invoke(main, ["visas", *args, "--record", self.RECORD], env=env)
        assert result.exit_code == 2 and says in result.output
