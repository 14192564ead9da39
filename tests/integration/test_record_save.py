"""`gatekeeper record save` against the ORCID emulator: a live record, saved and replayed."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from app.cli import main
from tests.integration.conftest import EMULATOR_CLIENT, REPO

QUALIFIED = "0009-0000-0000-0017"
SELF_ASSERTED = "0009-0000-0000-0025"
MANY_ITEMS = "0009-0000-0000-0068"
LOCKED = "0009-0000-0000-0076"


def env(orcid, api="/v3.0", check_status=None) -> dict:
    return {
        "ORCID_API_URL": f"{orcid.url}{api}",
        "ORCID_BASE_URL": orcid.url,
        "ORCID_CLIENT_ID": EMULATOR_CLIENT["client_id"],
        "ORCID_CLIENT_SECRET": EMULATOR_CLIENT["client_secret"],
        "POLICY_PATH": str(REPO / "policies"),
        "ORCID_CHECK_RECORD_STATUS": check_status,
    }


def save(orcid, researcher, *extra, api="/v3.0", check_status=None):
    return CliRunner().invoke(
        main, ["record", "save", "--orcid", researcher, *extra], env=env(orcid, api, check_status)
    )


def explain(orcid, researcher, dataset, *extra):
    args = ["explain", "--orcid", researcher, "--dataset", dataset, "--json", *extra]
    return CliRunner().invoke(main, args, env=env(orcid))


def outcome(result) -> list:
    """What a decision found, without when it was made."""
    decision = json.loads(result.stdout)
    return [decision["allowed"], decision["requirements"], decision["error"]]


class TestRecordSave:
    def test_a_saved_record_holds_the_summary_and_every_item(self, orcid, tmp_path):
        path = tmp_path / "record.json"
        result = save(orcid, QUALIFIED, "-o", str(path))
        assert result.exit_code == 0, result.output
        saved = json.loads(path.read_text())
        assert saved["orcid"] == QUALIFIED
        put_codes = {
            str(s["qualification-summary"]["put-code"])
            for group in saved["qualifications"]["affiliation-group"]
            for s in group["summaries"]
        }
        assert set(saved["items"]) == put_codes and len(put_codes) >= 3
        assert saved["items"]["1001"]["role-title"] == "Safe Researcher Training"
        # One summary read, then one read per item.
        counts = orcid.requests()
        assert counts["qualifications"] == 1 and counts["qualification"] == len(put_codes)
        assert result.stderr.strip() == f"saved {len(put_codes)} qualifications of {QUALIFIED}"

    def test_every_item_is_saved_not_only_the_candidates(self, orcid, tmp_path):
        path = tmp_path / "many.json"
        assert save(orcid, MANY_ITEMS, "-o", str(path)).exit_code == 0
        assert len(json.loads(path.read_text())["items"]) == 40

    @pytest.mark.parametrize("researcher", [QUALIFIED, SELF_ASSERTED], ids=["allowed", "refused"])
    @pytest.mark.parametrize("dataset", ["sail-cohort", "survey-microdata"])
    def test_explain_on_the_saved_record_decides_as_on_the_live_one(
        self, orcid, tmp_path, researcher, dataset
    ):
        path = tmp_path / "record.json"
        assert save(orcid, researcher, "-o", str(path)).exit_code == 0
        live = explain(orcid, researcher, dataset)
        replayed = explain(orcid, researcher, dataset, "--record", str(path))
        assert replayed.exit_code == live.exit_code
        assert outcome(replayed) == outcome(live)

    def test_without_o_the_record_goes_to_standard_output(self, orcid):
        result = save(orcid, QUALIFIED)
        assert result.exit_code == 0
        assert json.loads(result.stdout)["orcid"] == QUALIFIED

    def test_a_record_orcid_refuses_exits_1_with_one_line_and_writes_nothing(self, orcid, tmp_path):
        path = tmp_path / "locked.json"
        result = save(orcid, LOCKED, "-o", str(path))
        assert result.exit_code == 1
        [line] = result.output.splitlines()
        assert line.startswith(f"Error: could not read the ORCID record of {LOCKED}: ")
        assert not path.exists()

    def test_a_locked_record_on_the_public_api_is_caught_by_the_person_check(self, orcid, tmp_path):
        # The public API serves a locked record's qualifications; /person refuses it
        # (checked on a pub. host, or with ORCID_CHECK_RECORD_STATUS=1 as here).
        result = save(orcid, LOCKED, api="/pub/v3.0", check_status="1")
        assert result.exit_code == 1
        assert "locked" in result.output
        assert orcid.requests()["person"] == 1

    def test_an_invalid_id_exits_2_before_any_call(self, orcid):
        result = save(orcid, "0000-0002-1825-0098")
        assert result.exit_code == 2
        assert orcid.requests()["qualifications"] == 0
