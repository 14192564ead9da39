"""The emulator's v3.0 record API answers in ORCID's JSON shape, with ORCID's rules."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.emulator.conftest import (
    DEACTIVATED,
    DEPRECATED,
    LIMITED,
    LOCKED,
    ORCID_JSON,
    QUALIFIED,
    SELF_ASSERTED,
)

# ORCID's own JSON read sample (orcid-model), the authority on key names.
SAMPLE = json.loads(
    (
        Path(__file__).parents[1]
        / "data"
        / "orcid"
        / "samples"
        / "orcid-model_read_samples_record-full-3.0.qualifications-extract.json"
    ).read_text()
)
SAMPLE_GROUP = SAMPLE["affiliation-group"][0]
SAMPLE_ITEM = SAMPLE_GROUP["summaries"][0]["qualification-summary"]


def put_codes(body) -> list[int]:
    return [
        s["qualification-summary"]["put-code"]
        for g in body["affiliation-group"]
        for s in g["summaries"]
    ]


class TestQualifications:
    def test_summary_has_the_keys_of_orcids_sample_at_every_level(self, read):
        response = read(f"/{QUALIFIED}/qualifications")
        body = response.get_json()
        assert response.status_code == 200
        assert response.headers["Content-Type"] == ORCID_JSON
        assert body.keys() == SAMPLE.keys()
        group = body["affiliation-group"][0]
        assert group.keys() == SAMPLE_GROUP.keys()
        assert all(list(s) == ["qualification-summary"] for s in group["summaries"])
        item = group["summaries"][0]["qualification-summary"]
        assert item.keys() == SAMPLE_ITEM.keys()
        assert item["source"].keys() == SAMPLE_ITEM["source"].keys()
        assert item["organization"].keys() == SAMPLE_ITEM["organization"].keys()
        ext = item["external-ids"]["external-id"][0]
        assert ext.keys() == SAMPLE_ITEM["external-ids"]["external-id"][0].keys()
        assert body["path"] == f"/{QUALIFIED}/qualifications"

    def test_summary_values_are_typed_as_orcid_types_them(self, read):
        body = read(f"/{QUALIFIED}/qualifications").get_json()
        item = body["affiliation-group"][0]["summaries"][0]["qualification-summary"]
        assert item["put-code"] == 1001
        assert item["display-index"] == "0"
        assert item["visibility"] == "public"
        assert item["path"] == f"/{QUALIFIED}/qualification/1001"
        assert item["role-title"] == "Safe Researcher Training"
        assert isinstance(item["created-date"]["value"], int)
        assert all(
            re.fullmatch(r"\d{4}", d["year"]["value"])
            and re.fullmatch(r"\d{2}", d["month"]["value"])
            and re.fullmatch(r"\d{2}", d["day"]["value"])
            for d in (item["start-date"], item["end-date"])
        )
        assert item["url"] == {"value": "https://example.org/certs/srt-0017"}
        assert item["organization"]["disambiguated-organization"] == {
            "disambiguated-organization-identifier": "https://ror.org/05x6aa123",
            "disambiguation-source": "ROR",
        }
        assert item["source"] == {
            "source-orcid": None,
            "source-client-id": {
                "uri": "https://orcid.org/client/APP-UKDS000000000001",
                "path": "APP-UKDS000000000001",
                "host": "orcid.org",
            },
            "source-name": {"value": "UK Data Service"},
            "assertion-origin-orcid": None,
            "assertion-origin-client-id": None,
            "assertion-origin-name": None,
        }

    def test_items_sharing_an_external_id_are_one_group(self, read):
        body = read(f"/{QUALIFIED}/qualifications").get_json()
        first = body["affiliation-group"][0]
        assert [s["qualification-summary"]["put-code"] for s in first["summaries"]] == [1001, 1006]
        assert first["external-ids"]["external-id"][0]["external-id-value"] == "SRT-0017"

    def test_self_asserted_and_imported_items_carry_the_researcher_as_source_or_origin(self, read):
        body = read(f"/{SELF_ASSERTED}/qualifications").get_json()
        items = {
            s["qualification-summary"]["put-code"]: s["qualification-summary"]
            for g in body["affiliation-group"]
            for s in g["summaries"]
        }
        assert items[2001]["source"]["source-orcid"]["path"] == SELF_ASSERTED
        assert items[2001]["source"]["source-client-id"] is None
        imported = items[2002]["source"]
        assert imported["source-client-id"]["path"] == "APP-SEARCHLINK000001"
        assert imported["assertion-origin-orcid"]["path"] == SELF_ASSERTED

    def test_limited_and_private_items_are_hidden_from_anonymous_reads(self, read):
        assert put_codes(read(f"/{QUALIFIED}/qualifications").get_json()) == [
            1001,
            1006,
            1002,
            1003,
        ]

    def test_researchers_read_limited_token_also_shows_limited_items_never_private(
        self, read, sign_in
    ):
        token = sign_in("qualified", "/read-limited")
        codes = put_codes(read(f"/{QUALIFIED}/qualifications", token).get_json())
        assert 1004 in codes and 1005 not in codes

    def test_authenticate_token_shows_only_public_items(self, read, sign_in):
        token = sign_in("qualified", "/authenticate")
        assert 1004 not in put_codes(read(f"/{QUALIFIED}/qualifications", token).get_json())

    def test_record_with_only_limited_items_reads_as_empty_without_a_token(self, read):
        body = read(f"/{LIMITED}/qualifications").get_json()
        assert body["affiliation-group"] == [] and body["last-modified-date"] is None

    def test_missing_accept_header_answers_406_instead_of_orcids_xml(self, client):
        assert client.get(f"/v3.0/{QUALIFIED}/qualifications").status_code == 406

    def test_plain_json_accept_gets_plain_json(self, client):
        response = client.get(
            f"/v3.0/{QUALIFIED}/qualifications", headers={"Accept": "application/json"}
        )
        assert response.headers["Content-Type"] == "application/json"


class TestQualification:
    def test_single_item_is_not_wrapped_and_has_the_summary_keys(self, read):
        response = read(f"/{QUALIFIED}/qualification/1002")
        item = response.get_json()
        assert response.status_code == 200
        assert item.keys() == SAMPLE_ITEM.keys()
        assert item["put-code"] == 1002
        assert item["source"]["source-client-id"]["path"] == "APP-NIHR000000000001"

    def test_unknown_put_code_answers_404_with_9016(self, read):
        response = read(f"/{QUALIFIED}/qualification/999999")
        assert response.status_code == 404
        assert response.get_json()["error-code"] == 9016

    def test_another_records_put_code_answers_404(self, read):
        assert read(f"/{SELF_ASSERTED}/qualification/1001").status_code == 404

    def test_limited_item_answers_403_9039_anonymously(self, read):
        response = read(f"/{QUALIFIED}/qualification/1004")
        assert response.status_code == 403
        assert response.get_json()["error-code"] == 9039

    def test_limited_item_is_readable_with_the_researchers_read_limited_token(self, read, sign_in):
        token = sign_in("qualified", "/read-limited")
        response = read(f"/{QUALIFIED}/qualification/1004", token)
        assert response.status_code == 200
        assert response.get_json()["visibility"] == "limited"

    def test_private_item_answers_403_9013_even_with_a_read_limited_token(self, read, sign_in):
        token = sign_in("qualified", "/read-limited")
        response = read(f"/{QUALIFIED}/qualification/1005", token)
        assert response.status_code == 403
        assert response.get_json()["error-code"] == 9013


class TestPerson:
    def test_person_has_the_name_and_orcids_empty_sections(self, read):
        body = read(f"/{QUALIFIED}/person").get_json()
        assert body["path"] == f"/{QUALIFIED}/person"
        name = body["name"]
        assert name["given-names"] == {"value": "Amara"}
        assert name["family-name"] == {"value": "Okafor"}
        assert name["credit-name"] is None
        assert name["path"] == QUALIFIED
        assert body["emails"] == {
            "last-modified-date": None,
            "email": [],
            "path": f"/{QUALIFIED}/email",
        }

    def test_limited_name_is_null_anonymously_and_shown_to_the_researchers_token(
        self, read, sign_in
    ):
        assert read(f"/{LIMITED}/person").get_json()["name"] is None
        token = sign_in("limited", "/read-limited")
        assert read(f"/{LIMITED}/person", token).get_json()["name"]["given-names"] == {
            "value": "Lin"
        }


class TestRecordStatus:
    @pytest.mark.parametrize("path", ["/qualifications", "/qualification/7001", "/person"])
    def test_locked_record_answers_409_9018_everywhere(self, read, path):
        response = read(f"/{LOCKED}{path}")
        body = response.get_json()
        assert response.status_code == 409
        assert body["error-code"] == 9018
        assert body["response-code"] == 409
        assert body.keys() == {
            "response-code",
            "developer-message",
            "user-message",
            "error-code",
            "more-info",
        }

    def test_deactivated_record_answers_409_9044(self, read):
        response = read(f"/{DEACTIVATED}/qualifications")
        assert response.status_code == 409
        assert response.get_json()["error-code"] == 9044

    @pytest.mark.parametrize("path", ["/qualifications", "/person"])
    def test_deprecated_record_answers_301_naming_the_primary_record(self, read, path):
        response = read(f"/{DEPRECATED}{path}")
        body = response.get_json()
        assert response.status_code == 301
        assert body["error-code"] == 9007
        assert (
            f"This account is deprecated. Please refer to account: https://orcid.org/{QUALIFIED}"
        ) in body["developer-message"]
        assert response.headers["Location"].endswith(f"/v3.0/{QUALIFIED}{path}")

    @pytest.mark.parametrize(
        "orcid",
        ["0000-0002-1825-0097", "not-an-id", "qualified"],
        ids=["unknown-id", "malformed", "persona-key"],
    )
    def test_unknown_id_answers_404_9016(self, read, orcid):
        response = read(f"/{orcid}/qualifications")
        assert response.status_code == 404
        assert response.get_json()["error-code"] == 9016


class TestTokens:
    def test_unknown_token_answers_401_invalid_token_without_echoing_it(self, read):
        token = "0f3b2c1d-aaaa-bbbb-cccc-123456789abc"
        response = read(f"/{QUALIFIED}/qualifications", token)
        body = response.get_json()
        assert response.status_code == 401
        assert body["error"] == "invalid_token"
        assert body["error_description"].startswith("Invalid access token: 0f3b2c1d")
        assert token not in body["error_description"]

    def test_revoked_token_answers_401(self, client, read, sign_in):
        token = sign_in("qualified")
        assert read(f"/{QUALIFIED}/qualifications", token).status_code == 200
        revoked = client.post("/_emulator/revoke", json={"orcid": QUALIFIED})
        assert revoked.get_json() == {"revoked": 1}
        assert read(f"/{QUALIFIED}/qualifications", token).status_code == 401

    def test_researchers_token_on_another_record_answers_401_9017(self, read, sign_in):
        token = sign_in("self-asserted")
        response = read(f"/{QUALIFIED}/qualifications", token)
        assert response.status_code == 401
        assert response.get_json()["error-code"] == 9017

    def test_read_public_token_reads_any_record(self, client, read):
        token = client.post(
            "/oauth/token",
            data={
                "client_id": "APP-TESTCLIENT000001",
                "client_secret": "test-secret",
                "grant_type": "client_credentials",
                "scope": "/read-public",
            },
        ).get_json()["access_token"]
        assert read(f"/{QUALIFIED}/qualifications", token).status_code == 200
        assert read(f"/{SELF_ASSERTED}/qualifications", token).status_code == 200
