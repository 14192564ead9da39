"""Qualification.to_dict / from_dict: the parsed form survives JSON unchanged."""

import json
from pathlib import Path

import pytest

from app.fuzzy_date import FuzzyDate
from app.qualifications import (
    ExternalId,
    Organization,
    Qualification,
    Source,
    UnreadableItem,
    item_from_dict,
    parse_summaries,
    read_item,
)
from tests import orcid_json
from tests.conftest import RESEARCHER, UKDS

SAMPLES = Path(__file__).parents[1] / "data" / "orcid" / "samples"
RECORD = Path(__file__).parents[2] / "app" / "examples" / "record-0000-0002-1825-0097.json"


def through_json(item):
    return item_from_dict(json.loads(json.dumps(item.to_dict())))


def parsed_items():
    record = json.loads(RECORD.read_text())
    items = [read_item(i) for i in record["items"].values()]
    items += parse_summaries(record["qualifications"])
    sample = SAMPLES / "orcid-model_read_samples_record-full-3.0.qualifications-extract.json"
    data = json.loads(sample.read_text())
    if isinstance(data, dict) and "affiliation-group" in data:
        items += parse_summaries(data)
    return items


class TestQualificationDicts:
    @pytest.mark.parametrize(
        "item",
        [
            Qualification(put_code=1),
            Qualification(
                put_code=7,
                title="Safe Researcher Training",
                department="Training",
                organization=Organization("UKDS", "05x6aa123", "ROR"),
                start=FuzzyDate(2025),
                end=FuzzyDate(2027, 6),
                url="https://example.org/certs/1",
                external_ids=(
                    ExternalId("uri", "https://example.org/q", None, "self"),
                    ExternalId("other-id", "X-1", "https://example.org/x", None),
                ),
                source=Source(
                    source_client_id="APP-UKDS000000000001",
                    source_name="UK Data Service",
                    assertion_origin_orcid=RESEARCHER,
                ),
                visibility="public",
            ),
            Qualification(put_code=8, start=FuzzyDate(2025, 2, 28), source=Source(unknown=True)),
            UnreadableItem(3, "Good Clinical Practice", "a date ORCID's schema does not allow"),
            UnreadableItem(None, None, "no put-code"),
        ],
        ids=["bare", "every-member", "full-date-unknown-source", "unreadable", "unreadable-bare"],
    )
    def test_an_item_comes_back_equal_after_json(self, item):
        assert through_json(item) == item

    def test_every_item_of_the_example_record_and_orcids_sample_comes_back_equal(self):
        items = parsed_items()
        assert len(items) >= 4
        for item in items:
            assert through_json(item) == item

    def test_times_keep_their_milliseconds_and_zone(self, make_qualification):
        src = orcid_json.source(client_id=UKDS)
        item = make_qualification(5, created_ms=1735689600123, src=src)
        back = through_json(item)
        assert back.created == item.created and back.created.microsecond == 123000
        assert back.created.utcoffset() is not None

    def test_absent_members_are_left_out_of_the_json(self):
        assert Qualification(put_code=1).to_dict() == {"put_code": 1, "source": {}}

    @pytest.mark.parametrize("start", ["25", "2025-6", "June", 2025])
    def test_a_fuzzy_date_in_another_form_is_refused(self, start):
        with pytest.raises((ValueError, TypeError)):
            item_from_dict({"put_code": 1, "start": start})
