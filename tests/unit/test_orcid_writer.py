"""The ORCID write client: each of ORCID's answers to a write becomes the right outcome.

``responses`` plays ORCID here (the emulator's own validation is tested in
tests/emulator/test_writes.py, and the whole flow against it in
tests/integration/test_earning.py); bodies are ORCID's error JSON (orcid-api.md §3).
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
import requests
import responses

from app.errors import OrcidUnavailable
from app.orcid_writer import (
    AlreadyAdded,
    NotOurItem,
    OrcidWriter,
    WriteError,
    WriteNotPermitted,
)

API = "https://api.sandbox.orcid.org/v3.0"
ORCID = "0000-0002-1825-0097"
BODY = {"role-title": "Accepted the agreement"}


def orcid_error(status: int, code: int, developer: str = "") -> dict:
    return {
        "response-code": status,
        "developer-message": developer or f"{status} error",
        "user-message": "Something went wrong.",
        "error-code": code,
        "more-info": "https://members.orcid.org/api/resources/troubleshooting",
    }


@pytest.fixture
def writer():
    return OrcidWriter(API, timeout=2)


@responses.activate
def test_a_post_returns_the_put_code_from_location_and_sends_orcid_json(writer):
    responses.post(
        f"{API}/{ORCID}/qualification",
        status=201,
        headers={"Location": f"{API}/{ORCID}/qualification/1234"},
    )
    assert writer.add(ORCID, "write-token", BODY) == 1234
    sent = responses.calls[0].request
    assert sent.headers["Authorization"] == "Bearer write-token"
    assert sent.headers["Content-Type"] == "application/vnd.orcid+json"
    assert sent.headers["Accept"] == "application/vnd.orcid+json"
    assert json.loads(sent.body) == BODY


@responses.activate
def test_a_201_without_location_is_an_error_not_a_guess(writer):
    responses.post(f"{API}/{ORCID}/qualification", status=201)
    with pytest.raises(WriteError, match="Location"):
        writer.add(ORCID, "t", BODY)


@responses.activate
def test_a_location_with_a_put_code_too_long_to_be_one_is_an_error(writer):
    location = f"{API}/{ORCID}/qualification/{'9' * 5000}"  # int() refuses 4,300 digits
    responses.post(f"{API}/{ORCID}/qualification", status=201, headers={"Location": location})
    with pytest.raises(WriteError, match="Location"):
        writer.add(ORCID, "t", BODY)


@pytest.mark.parametrize(
    "location",
    [
        f"{API}/0000-0001-5109-3700/qualification/999",  # another record
        "https://evil.example/anything/qualification/7",
    ],
    ids=["another-record", "no-record"],
)
@responses.activate
def test_a_location_on_another_record_is_not_taken_as_ours(writer, location):
    # Logged as "issued, put-code 999" before, while this record had nothing.
    responses.post(f"{API}/{ORCID}/qualification", status=201, headers={"Location": location})
    with pytest.raises(WriteError, match="Location"):
        writer.add(ORCID, "t", BODY)


@responses.activate
def test_an_answer_too_long_to_be_orcid_s_is_unavailable(writer):
    responses.post(f"{API}/{ORCID}/qualification", status=400, body="x" * (300 * 1024))
    with pytest.raises(OrcidUnavailable):
        writer.add(ORCID, "t", BODY)


@responses.activate
def test_409_9021_means_already_added(writer):
    responses.post(f"{API}/{ORCID}/qualification", status=409, json=orcid_error(409, 9021))
    with pytest.raises(AlreadyAdded) as caught:
        writer.add(ORCID, "t", BODY)
    assert (caught.value.status, caught.value.code) == (409, 9021)


@responses.activate
def test_a_409_for_a_locked_record_is_not_already_added(writer):
    responses.post(f"{API}/{ORCID}/qualification", status=409, json=orcid_error(409, 9018))
    with pytest.raises(WriteError) as caught:
        writer.add(ORCID, "t", BODY)
    assert not isinstance(caught.value, AlreadyAdded)
    assert caught.value.code == 9018


@responses.activate
def test_403_9010_on_put_and_delete_means_not_our_item(writer):
    url = f"{API}/{ORCID}/qualification/77"
    responses.put(url, status=403, json=orcid_error(403, 9010))
    responses.delete(url, status=403, json=orcid_error(403, 9010))
    with pytest.raises(NotOurItem):
        writer.update(ORCID, "t", 77, {"put-code": 77, **BODY})
    with pytest.raises(NotOurItem):
        writer.delete(ORCID, "t", 77)


@pytest.mark.parametrize(
    "status,body",
    [
        (401, {"error": "invalid_token", "error_description": "Invalid access token: x"}),
        (403, orcid_error(403, 9038)),  # the token lacks /activities/update
        (401, orcid_error(401, 9017)),  # a token for another record
        (403, {"error": "access_denied"}),
    ],
)
@responses.activate
def test_a_token_that_cannot_write_is_write_not_permitted(writer, status, body):
    responses.post(f"{API}/{ORCID}/qualification", status=status, json=body)
    with pytest.raises(WriteNotPermitted):
        writer.add(ORCID, "t", BODY)


@responses.activate
def test_a_validation_error_carries_orcid_s_code_and_message(writer):
    message = "Invalid org name: the organization must have a name"
    responses.post(f"{API}/{ORCID}/qualification", status=400, json=orcid_error(400, 9046, message))
    with pytest.raises(WriteError) as caught:
        writer.add(ORCID, "secret-token", BODY)
    assert caught.value.code == 9046
    assert message in caught.value.message
    assert "secret-token" not in caught.value.message


@responses.activate
def test_a_put_code_in_a_post_is_refused_as_9024(writer):
    responses.post(f"{API}/{ORCID}/qualification", status=400, json=orcid_error(400, 9024))
    with pytest.raises(WriteError) as caught:
        writer.add(ORCID, "t", {"put-code": 5, **BODY})
    assert caught.value.code == 9024


@pytest.mark.parametrize("status", [500, 502, 503, 429])
@responses.activate
def test_orcid_failing_is_orcid_unavailable(writer, status):
    responses.post(f"{API}/{ORCID}/qualification", status=status, body="<html>oops</html>")
    with pytest.raises(OrcidUnavailable):
        writer.add(ORCID, "t", BODY)


@responses.activate
def test_a_timeout_is_orcid_unavailable_and_not_retried(writer):
    responses.post(f"{API}/{ORCID}/qualification", body=requests.Timeout("slow"))
    with pytest.raises(OrcidUnavailable):
        writer.add(ORCID, "t", BODY)
    assert len(responses.calls) == 1  # a write that timed out may have landed


@responses.activate
def test_delete_of_a_gone_item_says_so(writer):
    responses.delete(f"{API}/{ORCID}/qualification/9", status=404, json=orcid_error(404, 9016))
    assert writer.delete(ORCID, "t", 9) is False
    responses.delete(f"{API}/{ORCID}/qualification/10", status=204)
    assert writer.delete(ORCID, "t", 10) is True


@responses.activate
def test_every_call_has_a_timeout(writer, monkeypatch):
    seen = []
    original = writer.session.request

    def spy(*args, **kwargs):
        seen.append(kwargs.get("timeout"))
        return original(*args, **kwargs)

    monkeypatch.setattr(writer.session, "request", spy)
    responses.put(f"{API}/{ORCID}/qualification/3", status=200, json={})
    writer.update(ORCID, "t", 3, {"put-code": 3, **BODY})
    assert seen == [2]


def test_the_body_of_a_put_carries_the_put_code_and_the_post_none():
    from app.orcid_writer import qualification_body
    from app.policy.model import IssueOrganization, IssueRule, QualificationRule

    rule = QualificationRule(
        key="dua",
        sources=("self-issued",),
        title="Accepted",
        issue=IssueRule(
            title="Accepted",
            organization=IssueOrganization("SAIL", "Swansea", "GB", "053fq8t95"),
            external_id_type="other-id",
            external_id_template="dua-{orcid}",
            valid_for_days=10,
        ),
    )
    post = qualification_body(rule, ORCID, dt.date(2026, 1, 1))
    put = qualification_body(rule, ORCID, dt.date(2026, 1, 1), put_code=41)
    assert "put-code" not in post
    assert put["put-code"] == 41
    assert put["external-ids"] == post["external-ids"]
