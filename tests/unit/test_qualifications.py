import datetime as dt
import json
from pathlib import Path

import pytest

from app.errors import MalformedResponse
from app.qualifications import parse_qualification, parse_summaries
from tests import orcid_json
from tests.conftest import RESEARCHER

SAMPLES = Path(__file__).parents[1] / "data" / "orcid" / "samples"
EXTRACT = SAMPLES / "orcid-model_read_samples_record-full-3.0.qualifications-extract.json"
FULL = SAMPLES / "orcid-model_read_samples_record-full-3.0.json"


class TestOrcidSamples:
    def test_the_qualifications_summary_sample_parses_field_by_field(self):
        [item] = parse_summaries(json.loads(EXTRACT.read_text()))
        assert item.put_code == 9269
        assert item.title == "role-title" and item.department == "department-name"
        assert str(item.start) == str(item.end) == "1948-02-02"
        assert item.organization.disambiguated_id == "http://dx.doi.org/10.13039/100000001"
        assert item.organization.disambiguation_source == "FUNDREF"
        assert item.source.source_client_id == "APP-OQYKBIN9CXD9U3SH"
        assert item.source.source_orcid is None
        assert item.source.assertion_origin_orcid == "0000-0002-7319-2192"
        assert item.source.source_name == "Demo Org Sandbox "
        assert item.created == dt.datetime(2019, 6, 7, 14, 10, 4, 796000, tzinfo=dt.UTC)
        assert [e.value for e in item.external_ids] == [
            "external-identifier-value",
            "external-identifier-value2",
        ]
        assert item.url == "http://tempuri.org" and item.visibility == "public"

    def test_the_full_record_sample_qualifications_section_parses(self):
        record = json.loads(FULL.read_text())
        items = parse_summaries(record["activities-summary"]["qualifications"])
        assert [i.put_code for i in items] == [9269]


class TestParsing:
    def test_an_item_without_organization_parses(self):
        item = parse_qualification(
            orcid_json.qualification(1, owner=RESEARCHER, no_organization=True)
        )
        assert item.organization is None

    def test_empty_summary_has_no_items(self):
        assert (
            parse_summaries({"last-modified-date": None, "affiliation-group": [], "path": "/x"})
            == []
        )
        assert parse_summaries({"affiliation-group": None}) == []

    @pytest.mark.parametrize(
        "mutate",
        [
            lambda d: d.update({"put-code": None}),
            lambda d: d.update({"put-code": "abc"}),
            lambda d: d.update(
                {
                    "start-date": {
                        "year": {"value": "2023"},
                        "month": {"value": "02"},
                        "day": {"value": "30"},
                    }
                }
            ),
            lambda d: d.update({"role-title": ["not", "a", "string"]}),
            lambda d: d.update({"source": "someone"}),
            lambda d: d.update({"organization": "Org"}),
            lambda d: d.update({"external-ids": {"external-id": [{"external-id-type": "uri"}]}}),
            lambda d: d.update({"created-date": {"value": "yesterday"}}),
            # 9999-12-31: a date Python holds, but an age limit added to it would not fit.
            lambda d: d.update({"created-date": {"value": "253402300799000"}}),
        ],
        ids=[
            "no-put-code",
            "bad-put-code",
            "impossible-date",
            "title-list",
            "source-string",
            "org-string",
            "ext-id-no-value",
            "bad-created",
            "created-in-9999",
        ],
    )
    def test_malformed_items_raise_malformed_response(self, mutate):
        data = orcid_json.qualification(1, owner=RESEARCHER)
        mutate(data)
        with pytest.raises(MalformedResponse):
            parse_qualification(data)

    @pytest.mark.parametrize(
        "body",
        [
            [],
            "text",
            {"affiliation-group": {}},
            {"affiliation-group": [{"summaries": None}]},
            {"affiliation-group": [{"summaries": [{"employment-summary": {}}]}]},
        ],
        ids=["list", "string", "group-dict", "no-summaries", "wrong-wrapper"],
    )
    def test_malformed_summaries_raise_malformed_response(self, body):
        with pytest.raises(MalformedResponse):
            parse_summaries(body)
