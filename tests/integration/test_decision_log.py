"""The decision log in a real Redis: the stream, retention, fail-soft, the commands, and
two gunicorn workers appending at once."""

import concurrent.futures
import datetime as dt
import json
import logging
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client import REGISTRY

from app.access import AccessChecker
from app.cache import RedisStore
from app.cli import main
from app.decision_log import (
    STREAM_KEY,
    DecisionLogUnavailable,
    LogEntry,
    RedisDecisionLog,
)
from app.orcid_client import OrcidClient
from app.policy import PolicyFile
from app.saved_record import SavedRecord
from tests import orcid_json
from tests.conftest import NIHR, POLICY, RESEARCHER, UKDS
from tests.integration.conftest import EMULATOR_CLIENT, REPO, sign_in

OTHER = "0000-0001-5109-3700"
PERSONAS = {  # persona -> iD, from app/emulator/fixtures/personas.yaml
    "qualified": "0009-0000-0000-0017",
    "self-asserted": "0009-0000-0000-0025",
    "expired": "0009-0000-0000-0033",
    "not-yet-valid": "0009-0000-0000-0041",
    "self-issued": "0009-0000-0000-005X",
    "many-items": "0009-0000-0000-0068",
}
DATASETS = ("sail-cohort", "survey-microdata")


class Records(SavedRecord):
    """Saved records for several researchers, with dates relative to today; counts reads."""

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


def days(n: int) -> str:
    return (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=n)).isoformat()


def qualified(orcid, safe_until):
    return [
        orcid_json.qualification(
            1,
            owner=orcid,
            title="Safe Researcher Training",
            src=orcid_json.source(client_id=UKDS),
            end=safe_until,
        ),
        orcid_json.qualification(
            2, owner=orcid, title="Good Clinical Practice", src=orcid_json.source(client_id=NIHR)
        ),
    ]


@pytest.fixture
def policy_path(write_policy):
    return write_policy(POLICY)


@pytest.fixture
def decided(policy_path, redis_url):
    """Three researchers' decisions for `sail` and `open`, logged in Redis."""
    records = Records(
        {
            RESEARCHER: qualified(RESEARCHER, days(10)),
            OTHER: qualified(OTHER, days(100)),
            "0000-0002-9079-593X": qualified("0000-0002-9079-593X", days(-5))[1:],
        }
    )
    checker = AccessChecker(
        PolicyFile(policy_path, check_interval=0), records, RedisStore.from_url(redis_url)
    )
    for orcid in records.records:
        for dataset in ("sail", "open"):
            checker.check(orcid, dataset)
    return checker


def cli(redis_url, *args, policy_path=None):
    env = {"REDIS_URL": redis_url}
    if policy_path is not None:
        env["POLICY_PATH"] = str(policy_path)
    return CliRunner().invoke(main, list(args), env=env)


def json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


class TestRedisStream:
    def test_each_decision_is_one_entry_that_reads_back_equal(self, decided, redis_server):
        assert redis_server.client.xlen(STREAM_KEY) == 6
        entries = decided.decision_log.entries(items=True)
        assert len(entries) == 6
        assert {(e.orcid, e.dataset) for e in entries} == {
            (o, d) for o in decided.reader.records for d in ("sail", "open")
        }
        for entry in entries:
            raw = redis_server.client.xrange(STREAM_KEY, entry.id, entry.id)[0][1]
            assert LogEntry.from_dict(json.loads(raw["entry"]), id=entry.id) == entry
            assert (raw["orcid"], raw["dataset"], raw["outcome"]) == (
                entry.orcid,
                entry.dataset,
                entry.outcome,
            )
        # Decisions only (what the console and `decisions list` read): no item parsed.
        for whole, alone in zip(entries, decided.decision_log.entries(), strict=True):
            assert alone.partial and not alone.qualifications and not alone.summaries
            assert (alone.decision, alone.entry_id, alone.id) == (
                whole.decision,
                whole.entry_id,
                whole.id,
            )
        allowed = decided.decision_log.entries(orcid=RESEARCHER, dataset="sail", items=True)[0]
        assert allowed.allowed and [q.put_code for q in allowed.qualifications] == [1, 2]

    def test_entries_past_the_retention_are_trimmed_at_the_next_append(
        self, redis_url, redis_server
    ):
        from app.decision_log import _fields

        now = int(time.time() * 1000)
        for age, sequence in [(40, 0), (40, 1), (31, 0), (29, 0)]:  # days old
            stream_id = f"{now - age * 86_400_000}-{sequence}"
            redis_server.client.xadd(STREAM_KEY, _fields(self.entries(1)[0]), id=stream_id)
        log = RedisDecisionLog(RedisStore.from_url(redis_url).redis, retention_days=30)
        assert log.append(self.entries(1)[0])
        kept = [int(i.split("-")[0]) for i, _ in redis_server.client.xrange(STREAM_KEY)]
        assert len(kept) == 2 and kept[0] == now - 29 * 86_400_000
        assert len(log.entries()) == 2

    def test_a_record_of_many_long_items_makes_no_entry_past_the_bound(self, redis_url):
        # A researcher decides how long their items' titles are and how many there are.
        from app.decision_log import MAX_ENTRY_BYTES
        from app.qualifications import UnreadableItem

        log = RedisDecisionLog(RedisStore.from_url(redis_url).redis)
        decision = self.entries(1)[0].decision
        others = tuple(UnreadableItem(n, "Safe Researcher " + "x" * 900, "") for n in range(200))
        assert log.append(LogEntry(decision, (), others))
        [(_, fields)] = RedisStore.from_url(redis_url).redis.xrange(STREAM_KEY)
        assert len(fields["entry"]) <= MAX_ENTRY_BYTES
        [entry] = log.entries(items=True)
        assert 0 < len(entry.summaries) < 200
        assert entry.summaries == others[: len(entry.summaries)]  # the first ones kept

    def test_entries_logged_before_the_decision_had_its_own_field_still_read(
        self, redis_url, redis_server
    ):
        from app.decision_log import _fields

        [entry] = self.entries(1)
        old = {k: v for k, v in _fields(entry).items() if k not in ("decision", "entry_id")}
        redis_server.client.xadd(STREAM_KEY, old)
        log = RedisDecisionLog(RedisStore.from_url(redis_url).redis)
        [alone] = log.entries()
        assert (alone.decision, alone.entry_id) == (entry.decision, entry.entry_id)

    def test_a_copy_of_an_entry_is_read_once(self, redis_url):
        log = RedisDecisionLog(RedisStore.from_url(redis_url).redis)
        [entry] = self.entries(1)
        log.append(entry)
        log.append(entry)  # as a retried XADD whose first reply was lost would
        assert len(log) == 2 and len(log.entries()) == 1

    def test_text_utf8_cannot_encode_is_still_logged(self, redis_url):
        from app.qualifications import UnreadableItem

        log = RedisDecisionLog(RedisStore.from_url(redis_url).redis)
        decision = self.entries(1)[0].decision
        item = UnreadableItem(1, "Safe \ud800 Researcher", "a lone surrogate \udfff")
        assert log.append(LogEntry(decision, (item,)))
        assert log.entries(items=True)[0].qualifications == (item,)

    def test_reading_pages_through_a_long_stream_newest_first(self, redis_url):
        log = RedisDecisionLog(RedisStore.from_url(redis_url).redis)
        for entry in self.entries(1203):
            log.append(entry)
        ids = [e.id for e in log.entries()]
        assert len(ids) == len(set(ids)) == 1203
        assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))), reverse=True)
        assert len(log.entries(limit=501)) == 501

    @staticmethod
    def entries(count):
        from app.decision import Decision

        decision = Decision(RESEARCHER, "sail", False, (), "v1", dt.datetime.now(dt.UTC))
        return [LogEntry(decision) for _ in range(count)]


class TestFailSoft:
    def test_redis_down_never_fails_a_decision(self, policy_path, redis_url, redis_server, caplog):
        records = Records({RESEARCHER: qualified(RESEARCHER, days(10))})
        checker = AccessChecker(
            PolicyFile(policy_path, check_interval=0), records, RedisStore.from_url(redis_url)
        )
        before = REGISTRY.get_sample_value("gatekeeper_decision_log_failures_total")
        redis_server.stop()
        with caplog.at_level(logging.WARNING, logger="app.decision_log"):
            assert checker.check(RESEARCHER, "sail").allowed
            assert not checker.check(RESEARCHER, "open").allowed
        assert REGISTRY.get_sample_value("gatekeeper_decision_log_failures_total") == before + 2
        warnings = [r for r in caplog.records if r.name == "app.decision_log"]
        assert len(warnings) == 1 and "dropped" in warnings[0].getMessage()
        with pytest.raises(DecisionLogUnavailable):
            checker.decision_log.entries()

    def test_the_commands_say_redis_did_not_answer(self, redis_url, redis_server, policy_path):
        redis_server.stop()
        listed = cli(redis_url, "decisions", "list")
        assert listed.exit_code == 1 and "Redis did not answer" in listed.output
        impact = cli(redis_url, "policy", "impact", str(policy_path), policy_path=policy_path)
        assert impact.exit_code == 2 and "Redis did not answer" in impact.output


class TestDecisionsList:
    def test_json_lines_say_who_what_when_under_which_policy_and_why(self, decided, redis_url):
        result = cli(redis_url, "decisions", "list", "--json")
        assert result.exit_code == 0, result.output
        lines = json_lines(result.output)
        assert len(lines) == 6
        mine = next(x for x in lines if x["orcid"] == RESEARCHER and x["dataset"] == "sail")
        assert mine["allowed"] is True and mine["reasons"] == []
        assert mine["policy_version"] == decided.policy.version
        assert dt.datetime.fromisoformat(mine["decided_at"]).tzinfo is not None
        refused = next(x for x in lines if x["orcid"] == RESEARCHER and x["dataset"] == "open")
        assert (refused["allowed"], refused["outcome"], refused["reasons"]) == (
            False,
            "deny",
            ["missing"],
        )

    @pytest.mark.parametrize(
        "args, expected",
        [
            (["--orcid", RESEARCHER], {(RESEARCHER, "sail"), (RESEARCHER, "open")}),
            (["--orcid", f"https://orcid.org/{OTHER}", "--dataset", "sail"], {(OTHER, "sail")}),
            (["--dataset", "sail", "--outcome", "allow"], {(RESEARCHER, "sail"), (OTHER, "sail")}),
            (["--outcome", "error"], set()),
        ],
        ids=["orcid", "uri-and-dataset", "dataset-and-outcome", "no-errors"],
    )
    def test_filters(self, decided, redis_url, args, expected):
        result = cli(redis_url, "decisions", "list", "--json", *args)
        assert result.exit_code == 0, result.output
        assert {(x["orcid"], x["dataset"]) for x in json_lines(result.output)} == expected

    def test_since_leaves_out_older_decisions(self, redis_url, redis_server):
        old = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
        [entry] = TestRedisStream.entries(1)
        from app.decision_log import _fields

        redis_server.client.xadd(STREAM_KEY, _fields(entry), id=f"{int(old.timestamp() * 1000)}-0")
        RedisDecisionLog(RedisStore.from_url(redis_url).redis).append(TestRedisStream.entries(1)[0])
        week = json_lines(cli(redis_url, "decisions", "list", "--json").output)
        month = json_lines(cli(redis_url, "decisions", "list", "--json", "--since", "30d").output)
        date = (old - dt.timedelta(days=1)).date().isoformat()
        dated = json_lines(cli(redis_url, "decisions", "list", "--json", "--since", date).output)
        assert (len(week), len(month), len(dated)) == (1, 2, 2)

    def test_text_lines_and_the_count(self, decided, redis_url):
        result = cli(redis_url, "decisions", "list", "--orcid", RESEARCHER, "--dataset", "open")
        assert result.exit_code == 0
        line = result.output.splitlines()[0]
        assert f"  deny   {RESEARCHER}  open  policy {decided.policy.version}  missing" in line
        assert "1 decision since" in result.output

    @pytest.mark.parametrize(
        "args, message",
        [
            (["--since", "soon"], "--since: 'soon' is not a duration such as 7d"),
            (["--outcome", "maybe"], "--outcome: 'maybe' is not one of allow, deny, error"),
            (["--orcid", "0000-0002-1825-0098"], "its check digit is wrong"),
            # Overflowed moving to UTC (a traceback); before 1970, Redis refused the ID.
            (["--since", "9999-12-31T23:59:59-05:00"], "is not between 1970 and now"),
            (["--since", "0001-01-01"], "is not between 1970 and now"),
        ],
        ids=["since", "outcome", "orcid", "since-year-9999", "since-year-1"],
    )
    def test_misuse_exits_2_with_one_line(self, redis_url, args, message):
        result = cli(redis_url, "decisions", "list", *args)
        assert result.exit_code == 2
        assert len(result.output.strip().splitlines()) == 1
        assert message in result.output

    def test_without_redis_url_it_says_so(self):
        result = CliRunner().invoke(main, ["decisions", "list"], env={"REDIS_URL": ""})
        assert result.exit_code == 2 and "REDIS_URL is not set" in result.output


class TestDecisionsExpiring:
    def test_allowed_researchers_whose_qualification_ends_in_the_window(self, decided, redis_url):
        result = cli(redis_url, "decisions", "expiring", "--json")
        assert result.exit_code == 0, result.output
        assert json_lines(result.output) == [
            {
                "orcid": RESEARCHER,
                "dataset": "sail",
                "ends_on": days(10),
                "requirement": "safe-researcher",
                "qualification": "Safe Researcher Training",
                "put_code": 1,
                "decided_at": json_lines(result.output)[0]["decided_at"],
            }
        ]
        longer = cli(redis_url, "decisions", "expiring", "--within", "120d")
        lines = longer.output.splitlines()
        assert (
            lines[0] == f'{days(10)}  {RESEARCHER}  sail  "Safe Researcher Training" (put-code 1)'
        )
        assert lines[1] == f'{days(100)}  {OTHER}  sail  "Safe Researcher Training" (put-code 1)'
        assert "2 qualifications of allowed researchers end by" in longer.output

    def test_a_refused_researcher_is_not_reminded(self, decided, redis_url):
        lines = json_lines(cli(redis_url, "decisions", "expiring", "--within", "1000d").output)
        assert "0000-0002-9079-593X" not in {x["orcid"] for x in lines}


class TestPolicyImpact:
    @pytest.fixture
    def logged_from_orcid(self, orcid, redis_url):
        """Decisions for the emulator's personas, read from ORCID and logged in Redis."""
        reader = OrcidClient(
            f"{orcid.url}/v3.0",
            base_url=orcid.url,
            client_id=EMULATOR_CLIENT["client_id"],
            client_secret=EMULATOR_CLIENT["client_secret"],
        )
        checker = AccessChecker(
            PolicyFile(REPO / "policies", check_interval=0),
            reader,
            RedisStore.from_url(redis_url),
            own_client_id=EMULATOR_CLIENT["client_id"],
        )
        for orcid_id in PERSONAS.values():
            for dataset in DATASETS:
                checker.check(orcid_id, dataset)
        assert orcid.requests()["qualifications"] == len(PERSONAS) * len(DATASETS)
        orcid.reset()
        return checker

    def candidate(self, tmp_path, old, new):
        folder = tmp_path / "candidate"
        folder.mkdir()
        for file in (REPO / "policies").glob("*.yaml"):
            if not file.name.endswith(".test.yaml"):
                (folder / file.name).write_text(file.read_text().replace(old, new))
        return folder

    def test_a_changed_outcome_is_found_from_the_log_without_calling_orcid(
        self, logged_from_orcid, orcid, redis_url, tmp_path
    ):
        new = self.candidate(
            tmp_path, "client_ids: [APP-UKDS000000000001]", "client_ids: [APP-UKDS000000000002]"
        )
        result = cli(redis_url, "policy", "impact", str(new), policy_path=REPO / "policies")
        assert result.exit_code == 1, result.output
        lines = result.output.splitlines()
        assert f"{PERSONAS['qualified']}  sail-cohort  allow -> deny" in lines
        at = lines.index(f"{PERSONAS['qualified']}  sail-cohort  allow -> deny")
        assert lines[at + 1].startswith("    safe-researcher: met -> not met: put-code 1001")
        assert "this dataset needs it from UK Data Service" in lines[at + 1]
        assert "would change" in lines[-1] or "would change" in result.output
        assert sum(orcid.requests().values()) == 0

    def test_json_lines_name_before_after_and_the_requirement(
        self, logged_from_orcid, orcid, redis_url, tmp_path
    ):
        new = self.candidate(
            tmp_path, "client_ids: [APP-UKDS000000000001]", "client_ids: [APP-UKDS000000000002]"
        )
        result = cli(
            redis_url, "policy", "impact", str(new), "--json", policy_path=REPO / "policies"
        )
        assert result.exit_code == 1
        changes = json_lines(result.output)
        mine = next(
            c
            for c in changes
            if c["orcid"] == PERSONAS["qualified"] and c["dataset"] == "sail-cohort"
        )
        assert (mine["before"], mine["after"]) == ("allow", "deny")
        assert mine["changed_by"][0]["requirement"] == "safe-researcher"
        assert "wrong_source" in mine["changed_by"][0]["reasons"]
        assert sum(orcid.requests().values()) == 0

    def test_the_policy_in_force_changes_nothing_and_exits_0(self, logged_from_orcid, redis_url):
        policies = REPO / "policies"
        result = cli(redis_url, "policy", "impact", str(policies), policy_path=policies)
        assert result.exit_code == 0, result.output
        assert result.output.startswith(
            f"0 of {len(PERSONAS) * len(DATASETS)} researcher-dataset pairs would change"
        )

    def test_a_broken_candidate_exits_2(self, redis_url, write_policy):
        broken = write_policy("version: 1\ndatasets: {x: {}}\n", name="broken.yaml")
        result = cli(redis_url, "policy", "impact", str(broken), policy_path=REPO / "policies")
        assert result.exit_code == 2 and "is broken" in result.output

    def test_since_must_be_a_duration_or_a_date(self, redis_url):
        policies = str(REPO / "policies")
        result = cli(redis_url, "policy", "impact", policies, "--since", "x", policy_path=policies)
        assert result.exit_code == 2


class TestPolicyDiffCommand:
    def test_exit_codes_and_words(self, write_policy):
        old = write_policy(POLICY, name="old.yaml")
        new = write_policy(
            POLICY.replace("    cache_ttl: 900\n", "    cache_ttl: 60\n"), name="new.yaml"
        )
        same = CliRunner().invoke(main, ["policy", "diff", str(old), str(old)])
        assert same.exit_code == 0 and same.output.startswith("no changes (version ")
        changed = CliRunner().invoke(main, ["policy", "diff", str(old), str(new)])
        assert changed.exit_code == 1
        assert changed.output.splitlines()[1] == '  dataset "sail": cache_ttl 900 -> 60'
        broken = write_policy("version: 1\ndatasets: {x: {}}\n", name="broken.yaml")
        assert CliRunner().invoke(main, ["policy", "diff", str(old), str(broken)]).exit_code == 2


class TestTwoWorkers:
    def test_no_entry_is_lost_or_duplicated(self, start_gatekeeper, redis_url, redis_server, orcid):
        gatekeeper = start_gatekeeper(redis_url=redis_url, workers=2)
        browsers = {persona: sign_in(gatekeeper.url, persona)[0] for persona in PERSONAS}
        orcid.reset()
        redis_server.client.delete(STREAM_KEY)

        def check(persona, dataset):
            response = browsers[persona].get(
                f"{gatekeeper.url}/auth", params={"dataset": dataset}, timeout=20
            )
            return response.status_code

        jobs = [(p, d) for p in PERSONAS for d in DATASETS] * 4
        with concurrent.futures.ThreadPoolExecutor(max_workers=24) as pool:
            statuses = list(pool.map(lambda job: check(*job), jobs))
        assert set(statuses) <= {200, 403}
        pairs = len(PERSONAS) * len(DATASETS)
        raw = redis_server.client.xrange(STREAM_KEY)
        entries = [json.loads(fields["entry"]) for _, fields in raw]
        assert len(entries) == pairs
        assert len({e["entry_id"] for e in entries}) == pairs
        assert {(e["decision"]["orcid"], e["decision"]["dataset"]) for e in entries} == {
            (PERSONAS[p], d) for p in PERSONAS for d in DATASETS
        }
        # One decision is one summary read: none was made without being logged.
        assert orcid.requests()["qualifications"] == pairs
        assert len({e["instance"] for e in entries}) == 2
        gatekeeper.stop()
        lines = Path(gatekeeper.log.name).read_text().splitlines()
        logged = [json.loads(x) for x in lines if '"logger": "app.decisions"' in x]
        assert len(logged) == pairs
