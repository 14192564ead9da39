"""The emulator's v3.0 record API answers in ORCID's JSON shape, with ORCID's rules."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from app.emulator import create_app
from tests.emulator.conftest import (
    DEACTIVATED,
    DEPRECATED,
    LIMITED,
    LOCKED,
    ORCID_JSON,
    QUALIFIED,
    SELF_ASSERTED,
    TEST_CLIENTS,
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


UNCLAIMED = "0009-0000-0000-0121"
SEARCH_AND_LINK = "0009-0000-0000-013X"


@pytest.fixture
def read_at(client):
    """GET a record path under one of the emulator's API base paths."""

    def read_at(base: str, path: str, token: str | None = None, **headers):
        headers.setdefault("Accept", ORCID_JSON)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return client.get(base + path, headers=headers)

    return read_at


def read_public_token(client) -> str:
    form = {
        "client_id": "APP-TESTCLIENT000001",
        "client_secret": "test-secret",
        "grant_type": "client_credentials",
        "scope": "/read-public",
    }
    return client.post("/oauth/token", data=form).get_json()["access_token"]


class TestPublicAndMemberApis:
    @pytest.mark.parametrize(
        "path",
        [
            f"/{LOCKED}/qualifications",
            f"/{LOCKED}/qualification/7001",
            f"/{DEACTIVATED}/qualifications",
            f"/{UNCLAIMED}/qualifications",
            f"/{UNCLAIMED}/qualification/9101",
        ],
    )
    def test_public_api_serves_qualifications_whatever_the_records_status(self, read_at, path):
        response = read_at("/pub/v3.0", path)
        assert response.status_code == 200, response.get_data(as_text=True)

    @pytest.mark.parametrize(
        "orcid, code", [(LOCKED, 9018), (DEACTIVATED, 9044), (UNCLAIMED, 9036)]
    )
    def test_public_api_person_refuses_a_record_it_will_not_serve(self, read_at, orcid, code):
        response = read_at("/pub/v3.0", f"/{orcid}/person")
        assert response.status_code == 409
        assert response.get_json()["error-code"] == code

    def test_public_api_deprecated_person_answers_301(self, read_at):
        response = read_at("/pub/v3.0", f"/{DEPRECATED}/person")
        assert response.status_code == 301
        assert response.headers["Location"].endswith(f"/pub/v3.0/{QUALIFIED}/person")

    @pytest.mark.parametrize("path", ["/qualifications", "/qualification/7001", "/person"])
    def test_member_api_refuses_a_locked_record_on_every_call(self, client, read_at, sign_in, path):
        token = sign_in("locked", "/read-limited")
        response = read_at("/api/v3.0", f"/{LOCKED}{path}", token)
        assert response.status_code == 409
        assert response.get_json()["error-code"] == 9018

    def test_member_api_checks_the_status_before_the_token(self, read_at, sign_in):
        # Another researcher's token: the record's status is what ORCID reports first.
        token = sign_in("qualified", "/read-limited")
        assert read_at("/api/v3.0", f"/{LOCKED}/qualifications", token).status_code == 409
        refused = read_at("/api/v3.0", f"/{SELF_ASSERTED}/qualifications", token)
        assert refused.status_code == 401
        assert refused.get_json()["error-code"] == 9017

    def test_member_api_needs_a_token(self, read_at):
        response = read_at("/api/v3.0", f"/{QUALIFIED}/qualifications")
        assert response.status_code == 403
        assert response.get_json()["error"] == "forbidden"

    def test_member_api_refuses_a_public_clients_token(self, client, read_at):
        code = (
            client.get(
                "/oauth/authorize",
                query_string={
                    "client_id": "APP-PUBLICCLIENT0001",
                    "response_type": "code",
                    "scope": "/authenticate",
                    "redirect_uri": "http://127.0.0.1:5000/callback",
                    "persona": "qualified",
                    "decision": "authorize",
                },
            )
            .headers["Location"]
            .split("code=")[1]
            .split("&")[0]
        )
        token = client.post(
            "/oauth/token",
            data={
                "client_id": "APP-PUBLICCLIENT0001",
                "client_secret": "test-secret",
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": "http://127.0.0.1:5000/callback",
            },
        ).get_json()["access_token"]
        response = read_at("/api/v3.0", f"/{QUALIFIED}/qualifications", token)
        assert response.status_code == 401
        assert response.get_json()["error-code"] == 9017
        assert read_at("/pub/v3.0", f"/{QUALIFIED}/qualifications", token).status_code == 200

    def test_public_api_shows_only_public_items_even_to_a_read_limited_token(
        self, read_at, sign_in
    ):
        token = sign_in("qualified", "/read-limited")
        member = put_codes(read_at("/api/v3.0", f"/{QUALIFIED}/qualifications", token).get_json())
        public = put_codes(read_at("/pub/v3.0", f"/{QUALIFIED}/qualifications", token).get_json())
        assert 1004 in member and 1004 not in public
        limited = read_at("/pub/v3.0", f"/{QUALIFIED}/qualification/1004", token)
        assert limited.status_code == 403
        assert limited.get_json()["error-code"] == 9039

    def test_public_api_does_not_tie_a_token_to_its_record(self, read_at, sign_in):
        token = sign_in("self-asserted")
        assert read_at("/pub/v3.0", f"/{QUALIFIED}/qualifications", token).status_code == 200

    def test_every_api_counts_as_the_same_endpoint(self, client, read_at):
        read_at("/pub/v3.0", f"/{QUALIFIED}/qualifications")
        read_at("/api/v3.0", f"/{QUALIFIED}/qualifications", read_public_token(client))
        read_at("/v3.0", f"/{QUALIFIED}/qualifications")
        assert client.get("/_emulator/requests").get_json()["qualifications"] == 3


class TestRecordStatusOrder:
    def test_unclaimed_record_answers_409_9036_with_orcids_texts(self, read):
        body = read(f"/{UNCLAIMED}/qualifications").get_json()
        assert body["error-code"] == 9036
        assert body["developer-message"] == "409 Conflict: This record has not been claimed."
        assert body["user-message"] == (
            "This record has not been claimed, if this is your record you can claim it at "
            "https://orcid.org/resend-claim."
        )

    @pytest.mark.parametrize("path", ["/qualifications", "/qualification/9101", "/person"])
    def test_unclaimed_record_is_refused_on_every_call_that_checks_status(
        self, read_at, sign_in, path
    ):
        token = sign_in("unclaimed", "/read-limited")
        for base in ("/v3.0", "/api/v3.0"):
            response = read_at(base, f"/{UNCLAIMED}{path}", token)
            assert response.status_code == 409, base
            assert response.get_json()["error-code"] == 9036


class TestOrcidErrorTexts:
    @pytest.mark.parametrize(
        "orcid, developer, user",
        [
            (
                LOCKED,
                "409 Conflict: The ORCID record is locked and cannot be edited. "
                f"ORCID {LOCKED} Full validation error: {LOCKED} is locked",
                "The ORCID record is locked.",
            ),
            (
                DEACTIVATED,
                "409 Conflict: The ORCID record is deactivated and cannot be edited. "
                f"Full validation error: {DEACTIVATED} is deactivated",
                "The ORCID record is deactivated.",
            ),
        ],
        ids=["9018", "9044"],
    )
    def test_status_errors_carry_orcids_messages(self, read, orcid, developer, user):
        body = read(f"/{orcid}/person").get_json()
        assert (body["developer-message"], body["user-message"]) == (developer, user)
        assert body["more-info"] == "https://members.orcid.org/api/resources/troubleshooting"

    def test_another_records_token_gets_orcids_9017_texts(self, read, sign_in):
        body = read(f"/{QUALIFIED}/qualifications", sign_in("self-asserted")).get_json()
        assert body["developer-message"] == (
            "401 Unauthorized: The client application is not authorized for this ORCID "
            "record. Full validation error: Access token is for a different record"
        )
        assert body["user-message"] == "The client application is not authorized."

    def test_non_public_item_gets_orcids_9039_texts(self, read):
        body = read(f"/{QUALIFIED}/qualification/1004").get_json()
        assert body["developer-message"] == (
            "403 Forbidden: The item is not public and cannot be accessed with the Public API."
        )
        assert body["user-message"] == "The client application is forbidden to perform the action."


class TestRequestParsing:
    @pytest.mark.parametrize("base", ["/v3.0", "/pub/v3.0"])
    @pytest.mark.parametrize("put_code", ["abc", "1001x", "1.0", "99999999999999999999"])
    def test_a_put_code_java_cannot_parse_answers_400_9006(self, read_at, base, put_code):
        response = read_at(base, f"/{QUALIFIED}/qualification/{put_code}")
        body = response.get_json()
        assert response.status_code == 400
        assert body["error-code"] == 9006
        assert body["developer-message"] == (
            "The client application sent a bad request to ORCID. "
            f'Full validation error: For input string: "{put_code}"'
        )

    def test_a_put_code_is_parsed_before_the_record_is_looked_up(self, read_at):
        response = read_at("/v3.0", "/0000-0002-1825-0097/qualification/abc")
        assert response.status_code == 400

    def test_a_signed_number_is_a_put_code_that_is_not_found(self, read):
        assert read(f"/{QUALIFIED}/qualification/+1001").status_code == 200
        assert read(f"/{QUALIFIED}/qualification/-1").get_json()["error-code"] == 9016

    @pytest.mark.parametrize("header", ["Bearer", "Bearer ", "bearer    "])
    def test_a_blank_bearer_header_is_an_anonymous_read(self, client, header):
        headers = {"Accept": ORCID_JSON, "Authorization": header}
        response = client.get(f"/v3.0/{QUALIFIED}/qualifications", headers=headers)
        assert response.status_code == 200
        assert 1004 not in put_codes(response.get_json())  # anonymous: public items only

    def test_access_token_query_parameter_is_honoured(self, client, sign_in):
        token = sign_in("qualified", "/read-limited")
        response = client.get(
            f"/v3.0/{QUALIFIED}/qualifications",
            query_string={"access_token": token},
            headers={"Accept": ORCID_JSON},
        )
        assert 1004 in put_codes(response.get_json())


GROUPING_FIXTURE = """
clients: []
user_obo_clients: [APP-SEARCHLINK000001]
personas:
  - key: grouped
    orcid: 0009-0000-0000-0017
    name: {given: Gus}
    qualifications:
      - {put_code: 1, title: A, source: {self: true}, start: 2024,
         external_ids: [{type: other-id, value: X}]}
      - {put_code: 2, title: B, source: {self: true}, start: 2024,
         external_ids: [{type: other-id, value: Y}]}
      - {put_code: 3, title: C, source: {self: true}, start: 2024,
         external_ids: [{type: other-id, value: X}, {type: other-id, value: Y}]}
      - {put_code: 4, title: D, source: {self: true}, start: 2024,
         external_ids: [{type: other-id, value: X, relationship: part-of}]}
      - {put_code: 5, title: E, source: {self: true}, start: 2024}
      - {put_code: 6, title: F, source: {client_id: APP-SEARCHLINK000001, name: S&L},
         start: 2024, organization: {name: Org}}
"""


@pytest.fixture
def grouped(tmp_path, signing_key):
    path = tmp_path / "personas.yaml"
    path.write_text(GROUPING_FIXTURE)
    app = create_app(path, clients=TEST_CLIENTS, signing_key=signing_key)
    client = app.test_client()

    def get(path: str):
        return client.get(f"/v3.0/{QUALIFIED}{path}", headers={"Accept": ORCID_JSON}).get_json()

    return get


class TestJsonShapes:
    def test_an_item_bridging_two_groups_merges_them(self, grouped):
        groups = grouped("/qualifications")["affiliation-group"]
        codes = [[s["qualification-summary"]["put-code"] for s in g["summaries"]] for g in groups]
        assert codes == [[1, 2, 3], [4], [5], [6]]
        keys = [e["external-id-value"] for e in groups[0]["external-ids"]["external-id"]]
        assert keys == ["X", "Y"]

    def test_a_part_of_identifier_does_not_group_and_is_no_group_key(self, grouped):
        groups = grouped("/qualifications")["affiliation-group"]
        assert groups[1]["external-ids"] == {"external-id": []}
        item = groups[1]["summaries"][0]["qualification-summary"]
        assert item["external-ids"]["external-id"][0]["external-id-relationship"] == "part-of"

    def test_an_item_without_identifiers_has_null_external_ids(self, grouped):
        assert grouped("/qualification/5")["external-ids"] is None
        groups = grouped("/qualifications")["affiliation-group"]
        assert groups[2]["summaries"][0]["qualification-summary"]["external-ids"] is None
        assert groups[2]["external-ids"] == {"external-id": []}

    def test_an_organization_without_an_address_has_one_with_null_members(self, grouped):
        assert grouped("/qualification/6")["organization"]["address"] == {
            "city": None,
            "region": None,
            "country": None,
        }

    def test_user_obo_clients_items_carry_the_researcher_as_assertion_origin(self, grouped):
        source = grouped("/qualification/6")["source"]
        assert source["source-client-id"]["path"] == "APP-SEARCHLINK000001"
        assert source["assertion-origin-orcid"] == {
            "uri": f"https://orcid.org/{QUALIFIED}",
            "path": QUALIFIED,
            "host": "orcid.org",
        }
        assert source["assertion-origin-name"] == {"value": "Gus"}

    def test_the_shipped_search_and_link_persona_reads_as_self_asserted(self, read):
        body = read(f"/{SEARCH_AND_LINK}/qualifications").get_json()
        sources = [
            s["qualification-summary"]["source"]
            for g in body["affiliation-group"]
            for s in g["summaries"]
        ]
        assert len(sources) == 2
        assert all(s["assertion-origin-orcid"]["path"] == SEARCH_AND_LINK for s in sources)
