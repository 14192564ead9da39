"""The emulator accepts qualification writes (POST, PUT, DELETE) as ORCID's Member API does."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import pytest

from app.emulator import create_app
from tests.emulator.conftest import (
    CLIENT_ID,
    LIMITED,
    LOCKED,
    ORCID_JSON,
    PUBLIC_CLIENT_ID,
    QUALIFIED,
    SECRET,
    TEST_CLIENTS,
    get_code,
    token_form,
)

WRITE_SCOPE = "/read-limited /activities/update"
OTHER_CLIENT_ID = "APP-OTHERSERVICE0001"
EMPTY = "0009-0000-0000-0113"  # a persona with no qualifications
# ORCID's own POST body for a qualification (orcid-model write_samples).
SAMPLE = json.loads(
    (
        Path(__file__).parents[1]
        / "data"
        / "orcid"
        / "samples"
        / "orcid-model_write_samples_qualification-3.0.json"
    ).read_text()
)


def body(**changes) -> dict:
    """ORCID's write sample, changed: a key set to None is removed."""
    item = copy.deepcopy(SAMPLE)
    for key, value in changes.items():
        if value is None:
            item.pop(key, None)
        else:
            item[key] = value
    return item


def org(**changes) -> dict:
    """The sample's organisation, changed: a key set to None is removed."""
    value = copy.deepcopy(SAMPLE["organization"])
    for key, change in changes.items():
        if change is None:
            value.pop(key, None)
        else:
            value[key] = change
    return value


@pytest.fixture
def app(signing_key):
    clients = [
        *TEST_CLIENTS,
        {
            "client_id": OTHER_CLIENT_ID,
            "client_secret": SECRET,
            "name": "Other Service",
            "member": True,
            "redirect_uris": "any-loopback",
        },
    ]
    return create_app(clients=clients, signing_key=signing_key)


@pytest.fixture
def token(sign_in):
    """A write token for the qualified researcher (Test Service)."""
    return sign_in("qualified", WRITE_SCOPE)


@pytest.fixture
def write(client):
    """Send a write to the Member API (or ``api``) with ORCID's JSON headers."""

    def write(method, path, token=None, json_body=None, api="/api/v3.0", **headers):
        headers = {"Accept": ORCID_JSON, **headers}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = None
        if json_body is not None:
            data = json.dumps(json_body)
            headers.setdefault("Content-Type", ORCID_JSON)
        return client.open(api + path, method=method, data=data, headers=headers)

    return write


@pytest.fixture
def get(client):
    def get(path, token=None, api="/api/v3.0"):
        headers = {"Accept": ORCID_JSON}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return client.get(api + path, headers=headers)

    return get


def sign_in_as(client, client_id, persona="qualified", scope=WRITE_SCOPE) -> str:
    code = get_code(client, persona, scope=scope, client_id=client_id)
    response = client.post("/oauth/token", data=token_form(code, client_id=client_id))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["access_token"]


def put_code_of(response) -> int:
    return int(response.headers["Location"].rsplit("/", 1)[1])


def summary_put_codes(body) -> list[int]:
    return [
        s["qualification-summary"]["put-code"]
        for g in body["affiliation-group"]
        for s in g["summaries"]
    ]


def error_code(response) -> int:
    return response.get_json()["error-code"]


class TestScopeForWriting:
    def test_a_client_may_ask_for_activities_update_and_the_token_records_it(self, client):
        code = get_code(client, "qualified", scope=WRITE_SCOPE)
        response = client.post("/oauth/token", data=token_form(code))
        assert response.get_json()["scope"] == WRITE_SCOPE

    def test_a_public_client_may_not_ask_for_activities_update(self, client):
        response = client.get(
            "/oauth/authorize",
            query_string={
                "client_id": PUBLIC_CLIENT_ID,
                "response_type": "code",
                "scope": "/activities/update",
                "redirect_uri": "http://127.0.0.1:5000/callback",
                "persona": "qualified",
                "decision": "authorize",
            },
        )
        assert response.status_code == 302
        assert "error=invalid_scope" in response.headers["Location"]


class TestCreate:
    def test_post_answers_201_with_the_items_url_and_an_empty_body(self, write, token):
        response = write("POST", f"/{QUALIFIED}/qualification", token, body())
        assert response.status_code == 201
        assert response.get_data() == b""
        assert "Content-Type" not in response.headers
        put_code = put_code_of(response)
        assert response.headers["Location"] == (
            f"http://localhost/api/v3.0/{QUALIFIED}/qualification/{put_code}"
        )

    def test_on_the_demo_api_the_location_is_under_its_own_base(self, write, token):
        response = write("POST", f"/{QUALIFIED}/qualification", token, body(), api="/v3.0")
        assert response.status_code == 201
        assert response.headers["Location"].startswith(
            f"http://localhost/v3.0/{QUALIFIED}/qualification/"
        )

    def test_the_new_item_reads_back_with_this_client_as_source_and_now_as_its_dates(
        self, write, get, token
    ):
        before = int(time.time() * 1000)
        response = write("POST", f"/{QUALIFIED}/qualification", token, body())
        item = get(response.headers["Location"].split("/api/v3.0", 1)[1], token).get_json()
        after = int(time.time() * 1000)
        assert item["put-code"] == put_code_of(response)
        assert item["role-title"] == SAMPLE["role-title"]
        assert item["department-name"] == SAMPLE["department-name"]
        assert item["start-date"] == {**SAMPLE["start-date"]}
        assert item["end-date"] == {**SAMPLE["end-date"]}
        assert item["url"] == SAMPLE["url"]
        assert item["organization"] == SAMPLE["organization"]
        assert [e["external-id-value"] for e in item["external-ids"]["external-id"]] == [
            "external-identifier-value",
            "external-identifier-value2",
        ]
        assert item["source"]["source-client-id"]["path"] == CLIENT_ID
        assert item["source"]["source-name"] == {"value": "Test Service"}
        assert item["source"]["source-orcid"] is None
        assert before <= item["created-date"]["value"] <= after
        assert item["last-modified-date"] == item["created-date"]
        assert item["path"] == f"/{QUALIFIED}/qualification/{item['put-code']}"

    def test_the_new_item_appears_in_the_summary(self, write, get, token):
        put_code = put_code_of(write("POST", f"/{QUALIFIED}/qualification", token, body()))
        summary = get(f"/{QUALIFIED}/qualifications", token).get_json()
        assert put_code in summary_put_codes(summary)
        assert summary["last-modified-date"]["value"] >= int(time.time() * 1000) - 60_000

    def test_an_item_sharing_a_self_id_joins_that_group(self, write, get, token):
        # The fixture's UKDS item 1001 carries other-id SRT-0017.
        ext = [
            {
                "external-id-type": "other-id",
                "external-id-value": "SRT-0017",
                "external-id-relationship": "self",
            }
        ]
        new = body(**{"external-ids": {"external-id": ext}})
        put_code = put_code_of(write("POST", f"/{QUALIFIED}/qualification", token, new))
        groups = get(f"/{QUALIFIED}/qualifications", token).get_json()["affiliation-group"]
        group = next(g for g in groups if put_code in summary_put_codes({"affiliation-group": [g]}))
        assert 1001 in summary_put_codes({"affiliation-group": [group]})

    def test_the_incoming_source_and_visibility_are_ignored(self, write, get, token):
        forged = body(
            visibility="private",
            source={
                "source-client-id": {"path": "APP-UKDS000000000001"},
                "source-name": {"value": "UK Data Service"},
            },
        )
        response = write("POST", f"/{QUALIFIED}/qualification", token, forged)
        assert response.status_code == 201
        item = get(f"/{QUALIFIED}/qualification/{put_code_of(response)}", token).get_json()
        assert item["source"]["source-client-id"]["path"] == CLIENT_ID
        assert item["visibility"] == "public"

    def test_the_item_gets_the_researchers_default_visibility(self, client, write, get):
        token = sign_in_as(client, CLIENT_ID, "limited")
        response = write("POST", f"/{LIMITED}/qualification", token, body(visibility="public"))
        path = f"/{LIMITED}/qualification/{put_code_of(response)}"
        assert get(path, token).get_json()["visibility"] == "limited"
        # So the Public API will not show it.
        assert error_code(get(path, api="/pub/v3.0")) == 9039

    def test_each_post_gets_a_new_put_code(self, write, token):
        first = write("POST", f"/{QUALIFIED}/qualification", token, body(**{"external-ids": None}))
        second = write("POST", f"/{QUALIFIED}/qualification", token, body(**{"external-ids": None}))
        assert put_code_of(first) != put_code_of(second)

    def test_posts_are_counted(self, client, write, token):
        write("POST", f"/{QUALIFIED}/qualification", token, body())
        assert client.get("/_emulator/requests").get_json()["qualification_create"] == 1

    def test_a_reset_forgets_what_was_written(self, client, write, get, token):
        put_code = put_code_of(write("POST", f"/{QUALIFIED}/qualification", token, body()))
        client.post("/_emulator/reset")
        assert error_code(get(f"/{QUALIFIED}/qualification/{put_code}", token)) == 9016
        again = write("POST", f"/{QUALIFIED}/qualification", token, body())
        assert put_code_of(again) > put_code  # put-codes are never reused


class TestValidation:
    @pytest.mark.parametrize(
        ("changes", "status", "code"),
        [
            ({"put-code": 12}, 400, 9024),
            ({"organization": None}, 400, 9046),
            ({"organization": org(name=None, **{"disambiguated-organization": None})}, 400, 9046),
            # A name alone, with no external ID: neither an organisation ID nor an identifier.
            (
                {
                    "organization": org(**{"disambiguated-organization": None}),
                    "external-ids": None,
                },
                400,
                9062,
            ),
            # ORCID checks for an organisation ID or identifier before the address.
            (
                {
                    "organization": org(
                        address={"city": "Leeds", "region": None, "country": None},
                        **{"disambiguated-organization": None},
                    ),
                    "external-ids": None,
                },
                400,
                9062,
            ),
            ({"organization": org(address={"city": "Leeds", "country": None})}, 400, 9061),
            ({"organization": org(address={"region": "Yorkshire"})}, 400, 9061),
            (
                {"end-date": {"year": {"value": "2021"}, "month": None, "day": None}},
                400,
                9055,
            ),
            (
                {
                    "start-date": {
                        "year": {"value": "2022"},
                        "month": {"value": "02"},
                        "day": {"value": "30"},
                    }
                },
                400,
                9049,
            ),
            (
                {
                    "organization": org(
                        **{
                            "disambiguated-organization": {
                                "disambiguated-organization-identifier": "027ka1x80",
                                "disambiguation-source": "ROR",
                            }
                        }
                    )
                },
                400,
                9045,
            ),
            ({"organization": org(address={"country": "United States"})}, 400, 9001),
        ],
        ids=[
            "put-code-in-post",
            "no-organization",
            "organization-without-name-or-id",
            "no-organization-id-nor-external-id",
            "9062-before-9061",
            "city-without-country",
            "region-without-country",
            "end-before-start",
            "impossible-date",
            "bare-ror-id",
            "country-not-alpha-2",
        ],
    )
    def test_orcid_refuses_a_bad_body(self, write, get, token, changes, status, code):
        response = write("POST", f"/{QUALIFIED}/qualification", token, body(**changes))
        assert response.status_code == status
        assert error_code(response) == code
        assert response.get_json()["response-code"] == status
        summary = get(f"/{QUALIFIED}/qualifications", token).get_json()
        assert max(summary_put_codes(summary)) < 100_000  # nothing was written

    def test_an_organization_id_without_a_name_is_enough(self, write, token):
        new = body(organization=org(name=None), **{"external-ids": None})
        assert write("POST", f"/{QUALIFIED}/qualification", token, new).status_code == 201

    def test_the_error_texts_are_orcids(self, write, token):
        response = write("POST", f"/{QUALIFIED}/qualification", token, body(**{"put-code": 3}))
        assert response.get_json() == {
            "response-code": 400,
            "developer-message": "400 Bad Request: Put-code is included when not expected. "
            "When posting new activities, the put code should be omitted.",
            "user-message": "There was an error when updating the record. Please try again. "
            "If the error persists, please contact Test Service for assistance.",
            "error-code": 9024,
            "more-info": "https://members.orcid.org/api/resources/troubleshooting",
        }

    def test_a_body_that_is_not_json_is_9001(self, client, token):
        response = client.post(
            f"/api/v3.0/{QUALIFIED}/qualification",
            data="{not json",
            headers={
                "Accept": ORCID_JSON,
                "Content-Type": ORCID_JSON,
                "Authorization": f"Bearer {token}",
            },
        )
        assert (response.status_code, error_code(response)) == (400, 9001)

    def test_a_body_that_is_not_json_typed_is_415(self, client, token):
        response = client.post(
            f"/api/v3.0/{QUALIFIED}/qualification",
            data=json.dumps(body()),
            headers={
                "Accept": ORCID_JSON,
                "Content-Type": "text/plain",
                "Authorization": f"Bearer {token}",
            },
        )
        assert (response.status_code, error_code(response)) == (415, 9001)


class TestDuplicates:
    def test_the_same_self_id_from_the_same_client_is_409_naming_the_first(self, write, token):
        first = put_code_of(write("POST", f"/{QUALIFIED}/qualification", token, body()))
        response = write("POST", f"/{QUALIFIED}/qualification", token, body())
        assert response.status_code == 409
        assert error_code(response) == 9021
        assert (
            f"please see element with put-code {first}."
            in (response.get_json()["developer-message"])
        )

    def test_the_value_is_compared_normalised(self, write, token):
        write("POST", f"/{QUALIFIED}/qualification", token, body())
        ext = copy.deepcopy(SAMPLE["external-ids"])
        ext["external-id"][0]["external-id-value"] = " External-Identifier-VALUE "
        response = write(
            "POST", f"/{QUALIFIED}/qualification", token, body(**{"external-ids": ext})
        )
        assert error_code(response) == 9021

    def test_identifiers_without_relationship_on_both_sides_are_duplicates(self, write, token):
        ext = {"external-id": [{"external-id-type": "other-id", "external-id-value": "X-1"}]}
        write("POST", f"/{QUALIFIED}/qualification", token, body(**{"external-ids": ext}))
        response = write(
            "POST", f"/{QUALIFIED}/qualification", token, body(**{"external-ids": ext})
        )
        assert error_code(response) == 9021

    def test_a_shared_part_of_id_is_no_duplicate(self, write, token):
        part_of = {"external-id": [SAMPLE["external-ids"]["external-id"][1]]}
        write("POST", f"/{QUALIFIED}/qualification", token, body(**{"external-ids": part_of}))
        response = write(
            "POST", f"/{QUALIFIED}/qualification", token, body(**{"external-ids": part_of})
        )
        assert response.status_code == 201

    def test_another_clients_item_with_the_same_id_is_no_duplicate(self, client, write, token):
        write("POST", f"/{QUALIFIED}/qualification", token, body())
        other = sign_in_as(client, OTHER_CLIENT_ID)
        assert write("POST", f"/{QUALIFIED}/qualification", other, body()).status_code == 201


class TestUpdate:
    @pytest.fixture
    def posted(self, write, token) -> int:
        return put_code_of(write("POST", f"/{QUALIFIED}/qualification", token, body()))

    def test_put_answers_200_with_the_updated_item(self, write, get, token, posted):
        created = get(f"/{QUALIFIED}/qualification/{posted}", token).get_json()["created-date"]
        time.sleep(0.002)
        renewed = body(**{"put-code": posted, "role-title": "Renewed"})
        response = write("PUT", f"/{QUALIFIED}/qualification/{posted}", token, renewed)
        assert response.status_code == 200
        item = response.get_json()
        assert item["role-title"] == "Renewed"
        assert item["created-date"] == created
        assert item["last-modified-date"]["value"] > created["value"]
        assert item["source"]["source-client-id"]["path"] == CLIENT_ID
        assert get(f"/{QUALIFIED}/qualification/{posted}", token).get_json() == item

    def test_put_without_a_put_code_in_the_body_is_9019(self, write, token, posted):
        # updateQualification compares the URL's put-code with the body's, null included
        # (9031, "Put-code is required", is only for person items).
        response = write("PUT", f"/{QUALIFIED}/qualification/{posted}", token, body())
        assert (response.status_code, error_code(response)) == (400, 9019)
        assert response.get_json()["developer-message"] == (
            f"400 Bad Request: The put code in the URL was {posted} whereas the one in the "
            "body was null."
        )

    def test_put_with_another_put_code_is_9019(self, write, token, posted):
        other = body(**{"put-code": posted + 1})
        response = write("PUT", f"/{QUALIFIED}/qualification/{posted}", token, other)
        assert (response.status_code, error_code(response)) == (400, 9019)

    def test_put_of_an_item_another_source_added_is_9010(self, write, token):
        response = write(
            "PUT", f"/{QUALIFIED}/qualification/1001", token, body(**{"put-code": 1001})
        )
        assert (response.status_code, error_code(response)) == (403, 9010)

    def test_put_of_a_missing_item_is_404(self, write, token):
        missing = body(**{"put-code": 999_999})
        response = write("PUT", f"/{QUALIFIED}/qualification/999999", token, missing)
        assert (response.status_code, error_code(response)) == (404, 9016)

    def test_changing_the_visibility_is_9035(self, write, token, posted):
        changed = body(**{"put-code": posted, "visibility": "private"})
        response = write("PUT", f"/{QUALIFIED}/qualification/{posted}", token, changed)
        assert (response.status_code, error_code(response)) == (403, 9035)

    def test_sending_the_same_visibility_is_fine(self, write, token, posted):
        same = body(**{"put-code": posted, "visibility": "public"})
        response = write("PUT", f"/{QUALIFIED}/qualification/{posted}", token, same)
        assert response.status_code == 200

    def test_put_onto_another_of_ones_own_ids_is_9021(self, write, token, posted):
        ext = {
            "external-id": [
                {
                    "external-id-type": "other-id",
                    "external-id-value": "B",
                    "external-id-relationship": "self",
                }
            ]
        }
        second = put_code_of(
            write("POST", f"/{QUALIFIED}/qualification", token, body(**{"external-ids": ext}))
        )
        clash = body(**{"put-code": second})  # the first item's identifiers
        response = write("PUT", f"/{QUALIFIED}/qualification/{second}", token, clash)
        assert (response.status_code, error_code(response)) == (409, 9021)


class TestDelete:
    def test_delete_answers_204_and_the_item_is_gone(self, write, get, token):
        put_code = put_code_of(write("POST", f"/{QUALIFIED}/qualification", token, body()))
        response = write("DELETE", f"/{QUALIFIED}/qualification/{put_code}", token)
        assert response.status_code == 204
        assert response.get_data() == b""
        assert error_code(get(f"/{QUALIFIED}/qualification/{put_code}", token)) == 9016
        summary = get(f"/{QUALIFIED}/qualifications", token).get_json()
        assert put_code not in summary_put_codes(summary)

    def test_delete_of_an_item_another_source_added_is_9010(self, write, get, token):
        response = write("DELETE", f"/{QUALIFIED}/qualification/1001", token)
        assert (response.status_code, error_code(response)) == (403, 9010)
        assert response.get_json()["developer-message"] == (
            "403 Forbidden: You are not the source of the work, so you are not allowed to "
            "update it."
        )
        assert get(f"/{QUALIFIED}/qualification/1001", token).status_code == 200

    def test_delete_of_a_missing_item_is_404(self, write, token):
        response = write("DELETE", f"/{QUALIFIED}/qualification/999999", token)
        assert (response.status_code, error_code(response)) == (404, 9016)


class TestWhoMayWrite:
    def test_without_a_token_the_member_api_answers_403_forbidden(self, write):
        response = write("POST", f"/{QUALIFIED}/qualification", None, body())
        assert response.status_code == 403
        assert response.get_json()["error"] == "forbidden"

    def test_a_dead_token_is_401_invalid_token(self, write):
        response = write("POST", f"/{QUALIFIED}/qualification", "not-a-token", body())
        assert response.status_code == 401
        assert response.get_json()["error"] == "invalid_token"

    def test_a_token_without_activities_update_is_403_9038(self, sign_in, write):
        token = sign_in("qualified", "/read-limited")
        response = write("POST", f"/{QUALIFIED}/qualification", token, body())
        assert (response.status_code, error_code(response)) == (403, 9038)

    def test_a_client_credentials_token_is_403_9038(self, client, write):
        response = client.post(
            "/oauth/token",
            data={
                "client_id": CLIENT_ID,
                "client_secret": SECRET,
                "grant_type": "client_credentials",
                "scope": "/read-public",
            },
        )
        token = response.get_json()["access_token"]
        response = write("POST", f"/{QUALIFIED}/qualification", token, body())
        assert (response.status_code, error_code(response)) == (403, 9038)

    def test_a_token_for_another_record_is_401_9017(self, write, token):
        response = write("POST", f"/{EMPTY}/qualification", token, body())
        assert (response.status_code, error_code(response)) == (401, 9017)

    def test_a_public_clients_token_is_401_9017(self, client, write):
        token = sign_in_as(client, PUBLIC_CLIENT_ID, scope="/authenticate")
        response = write("POST", f"/{QUALIFIED}/qualification", token, body())
        assert (response.status_code, error_code(response)) == (401, 9017)

    def test_a_locked_record_refuses_writes(self, client, write):
        token = sign_in_as(client, CLIENT_ID, "locked")
        response = write("POST", f"/{LOCKED}/qualification", token, body())
        assert (response.status_code, error_code(response)) == (409, 9018)

    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("POST", "/qualification"),
            ("PUT", "/qualification/1001"),
            ("DELETE", "/qualification/1001"),
        ],
        ids=["post", "put", "delete"],
    )
    def test_the_public_api_has_no_writes(self, write, token, method, path):
        response = write(method, f"/{QUALIFIED}{path}", token, body(), api="/pub/v3.0")
        assert (response.status_code, error_code(response)) == (405, 9001)
