import json

import pytest

from app.errors import InvalidOrcidId, MalformedResponse, RecordLocked
from app.qualifications import UnreadableItem
from app.saved_record import SavedRecord, SavedRecordError
from tests import orcid_json
from tests.conftest import RESEARCHER


def record(items, item_overrides=None, **extra):
    data = {"orcid": RESEARCHER, "qualifications": orcid_json.summaries(RESEARCHER, items)}
    if item_overrides is not None:
        data["items"] = {str(i["put-code"]): i for i in item_overrides}
    data.update(extra)
    return data


class TestSavedRecord:
    def test_an_item_filed_under_another_put_code_is_unreadable_as_on_the_live_api(self):
        summary = orcid_json.qualification(1, owner=RESEARCHER)
        other = orcid_json.qualification(99, owner=RESEARCHER)
        data = record([summary])
        data["items"] = {"1": other}
        [read] = SavedRecord(data).read_qualifications(RESEARCHER)
        assert isinstance(read, UnreadableItem) and read.put_code == 1

    def test_items_win_over_summaries(self):
        summary = orcid_json.qualification(1, owner=RESEARCHER, end="2030")
        item = orcid_json.qualification(1, owner=RESEARCHER, end="2020")
        [read] = SavedRecord(record([summary], [item])).read_qualifications(RESEARCHER)
        assert str(read.end) == "2020"

    def test_summary_stands_in_for_a_missing_item(self):
        summary = orcid_json.qualification(1, owner=RESEARCHER, end="2030")
        [read] = SavedRecord(record([summary])).read_qualifications(RESEARCHER)
        assert str(read.end) == "2030"

    def test_wanted_filters_summaries(self):
        items = [orcid_json.qualification(n, owner=RESEARCHER, title=f"T{n}") for n in range(5)]
        read = SavedRecord(record(items)).read_qualifications(RESEARCHER, lambda q: q.title == "T3")
        assert [q.put_code for q in read] == [3]

    def test_a_saved_error_is_replayed_as_a_typed_error(self):
        data = record([], error=orcid_json.error(409, 9018, "locked"))
        with pytest.raises(RecordLocked):
            SavedRecord(data).read_qualifications(RESEARCHER)

    @pytest.mark.parametrize(
        "error, message",
        [
            ("boom", "must be an ORCID error object"),
            ([409], "must be an ORCID error object"),
            ({"response-code": "abc"}, "response-code must be a whole number"),
            ({"response-code": "409"}, "response-code must be a whole number"),
            ({"response-code": True}, "response-code must be a whole number"),
            ({"developer-message": "no code"}, "response-code must be a whole number"),
        ],
        ids=["string", "list", "text-code", "quoted-code", "bool-code", "no-code"],
    )
    def test_a_saved_error_of_the_wrong_shape_is_a_clear_error(self, error, message):
        with pytest.raises(SavedRecordError, match=f"saved record: 'error' {message}"):
            SavedRecord(record([], error=error))

    def test_a_date_beyond_orcids_range_makes_the_item_unreadable(self):
        item = orcid_json.qualification(1, owner=RESEARCHER, end="9999-12-31")
        [read] = SavedRecord(record([item], [item])).read_qualifications(RESEARCHER)
        assert isinstance(read, UnreadableItem)
        assert read.put_code == 1 and read.title == "Safe Researcher Training"
        assert "year 9999 is out of range" in read.problem

    def test_another_researchers_record_is_refused(self):
        with pytest.raises(SavedRecordError, match="holds the record of"):
            SavedRecord(record([])).read_qualifications("0000-0001-5109-3700")

    def test_a_record_without_summary_is_malformed(self):
        with pytest.raises(MalformedResponse):
            SavedRecord({"orcid": RESEARCHER}).read_qualifications(RESEARCHER)

    def test_bad_files_are_clear_errors(self, tmp_path):
        with pytest.raises(SavedRecordError, match="cannot read"):
            SavedRecord.from_file(tmp_path / "missing.json")
        bad = tmp_path / "bad.json"
        bad.write_text("{nope")
        with pytest.raises(SavedRecordError, match="is not JSON"):
            SavedRecord.from_file(bad)
        wrong = tmp_path / "wrong.json"
        wrong.write_text(json.dumps({"orcid": "1234"}))
        with pytest.raises(InvalidOrcidId):
            SavedRecord.from_file(wrong)
