"""OrcidClient against a faked ORCID (the `responses` library), serving ORCID-shaped JSON.

`responses` hands over a body at once, so what only a slow server shows (a body or headers
dripped a byte at a time, a token endpoint that never answers) runs against real servers
on 127.0.0.1 instead, at the end of this module.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import re
import threading
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import requests
import responses

from app.errors import (
    AccessForbidden,
    InvalidOrcidId,
    MalformedResponse,
    OrcidError,
    OrcidUnavailable,
    RecordDeactivated,
    RecordDeprecated,
    RecordLocked,
    RecordNotFound,
    RecordUnclaimed,
    TokenInvalid,
    TooManyCandidates,
)
from app.fuzzy_date import FuzzyDate
from app.orcid_client import OrcidClient
from app.qualifications import Qualification, UnreadableItem
from tests import orcid_json
from tests.conftest import RESEARCHER

DATA = Path(__file__).parent.parent / "data" / "orcid"
SAMPLE_EXTRACT = (
    DATA / "samples" / "orcid-model_read_samples_record-full-3.0.qualifications-extract.json"
)
SAMPLE_OWNER = "0000-0002-7319-2192"

API = "https://api.orcid.test/v3.0"
BASE = "https://orcid.test"
TOKEN_URL = f"{BASE}/oauth/token"
ORCID_TYPE = "application/vnd.orcid+json;charset=UTF-8"
PRIMARY = "0000-0001-5109-3700"  # the record a deprecated iD was merged into

RESEARCHER_TOKEN = "f5af9f51-07e6-4332-8f1a-c0c11c1e3728"
CLIENT_ID = "APP-GATEKEEPER000001"
CLIENT_SECRET = "s3cret-9d1c-client-secret-value"
APP_TOKEN = json.loads((DATA / "token-client-credentials.json").read_text())["access_token"]


def load(name: str):
    return json.loads((DATA / name).read_text())


def serve(rsps, path: str, body, *, status: int = 200, headers=None, api: str = API):
    """Answer GET {api}{path} once per call with ORCID's JSON media type."""
    rsps.add(
        responses.GET,
        api + path,
        body=json.dumps(body),
        status=status,
        content_type=ORCID_TYPE,
        headers=headers or {},
    )


def serve_record(rsps, items: list[dict], *, owner: str = RESEARCHER, api: str = API):
    """The summary of ``items`` and each item at its own URL."""
    serve(rsps, f"/{owner}/qualifications", orcid_json.summaries(owner, items), api=api)
    for item in items:
        serve(rsps, f"/{owner}/qualification/{item['put-code']}", item, api=api)


def qualifications(count: int, owner: str = RESEARCHER) -> list[dict]:
    return [orcid_json.qualification(n, owner=owner) for n in range(1, count + 1)]


def paths(rsps) -> list[str]:
    return [requests.utils.urlparse(call.request.url).path for call in rsps.calls]


def calls_to(rsps, url: str) -> int:
    return sum(1 for call in rsps.calls if call.request.url == url)


@pytest.fixture
def orcid():
    """A faked ORCID; requests to anything not registered fail as connection errors."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


@pytest.fixture
def make_client(orcid):
    clients = []

    def make(api_url: str = API, **overrides) -> OrcidClient:
        settings = {
            "base_url": BASE,
            "backoff": 0.01,
            "connect_timeout": 0.5,
            "read_timeout": 0.5,
            "total_timeout": 2.0,
            "max_retries": 3,
        }
        client = OrcidClient(api_url=api_url, **(settings | overrides))
        clients.append(client)
        return client

    yield make
    for client in clients:
        # A /person check may still be running after the summary failed: let it end
        # while ORCID is still faked, so no request escapes to the network.
        client.executor.shutdown(wait=True)
        client.session.close()


@pytest.fixture
def client(make_client) -> OrcidClient:
    return make_client()


class TestReadQualifications:
    def test_reads_the_summary_then_each_item_and_returns_them_in_summary_order(
        self, orcid, client
    ):
        serve_record(orcid, qualifications(3))

        found = client.read_qualifications(RESEARCHER)

        assert [q.put_code for q in found] == [1, 2, 3]
        assert paths(orcid)[0] == f"/v3.0/{RESEARCHER}/qualifications"
        assert sorted(paths(orcid)[1:]) == [
            f"/v3.0/{RESEARCHER}/qualification/{n}" for n in (1, 2, 3)
        ]

    def test_every_call_asks_for_orcid_json_explicitly(self, orcid, client):
        serve_record(orcid, qualifications(2))

        client.read_qualifications(RESEARCHER)

        assert len(orcid.calls) == 3
        assert {call.request.headers["Accept"] for call in orcid.calls} == {
            "application/vnd.orcid+json"
        }

    @pytest.mark.parametrize(
        "token, authorization",
        [(RESEARCHER_TOKEN, f"Bearer {RESEARCHER_TOKEN}"), (None, None)],
        ids=["researcher-token-sent-as-bearer", "anonymous-sends-no-authorization"],
    )
    def test_authorization_header_carries_the_token_only_when_given(
        self, orcid, client, token, authorization
    ):
        serve_record(orcid, qualifications(2))

        client.read_qualifications(RESEARCHER, token=token)

        assert len(orcid.calls) == 3
        assert [call.request.headers.get("Authorization") for call in orcid.calls] == [
            authorization
        ] * 3

    def test_an_orcid_uri_is_read_as_its_bare_id(self, orcid, client):
        serve_record(orcid, qualifications(1))

        found = client.read_qualifications(f"https://orcid.org/{RESEARCHER}")

        assert [q.put_code for q in found] == [1]
        assert paths(orcid)[0] == f"/v3.0/{RESEARCHER}/qualifications"

    def test_an_empty_record_costs_one_call_and_returns_nothing(self, orcid, client):
        serve(orcid, f"/{RESEARCHER}/qualifications", orcid_json.summaries(RESEARCHER, []))

        assert client.read_qualifications(RESEARCHER) == []
        assert len(orcid.calls) == 1

    def test_orcids_own_sample_summary_served_verbatim_parses(self, orcid, client):
        raw = SAMPLE_EXTRACT.read_text()
        orcid.add(
            responses.GET,
            f"{API}/{SAMPLE_OWNER}/qualifications",
            body=raw,
            content_type=ORCID_TYPE,
        )
        # A single item has the summary's members, unwrapped (orcid-api.md §1.3).
        item = json.loads(raw)["affiliation-group"][0]["summaries"][0]["qualification-summary"]
        serve(orcid, f"/{SAMPLE_OWNER}/qualification/9269", item)
        seen = []

        found = client.read_qualifications(SAMPLE_OWNER, wanted=lambda q: seen.append(q) or True)

        for qualification in (seen[0], found[0]):
            assert qualification.put_code == 9269
            assert qualification.organization.disambiguation_source == "FUNDREF"
            assert (
                qualification.organization.disambiguated_id
                == "http://dx.doi.org/10.13039/100000001"
            )
            assert qualification.source.source_client_id == "APP-OQYKBIN9CXD9U3SH"
            assert qualification.source.source_orcid is None
            assert qualification.source.assertion_origin_orcid == SAMPLE_OWNER
            assert qualification.end == FuzzyDate(1948, 2, 2)
            assert len(qualification.external_ids) == 2
        assert len(seen) == len(found) == 1
        assert len(orcid.calls) == 2


class TestCandidateFilter:
    def test_forty_item_summary_with_one_wanted_item_costs_two_calls(self, orcid, client):
        serve_record(orcid, qualifications(40))

        found = client.read_qualifications(RESEARCHER, wanted=lambda q: q.put_code == 17)

        assert [q.put_code for q in found] == [17]
        assert len(orcid.calls) == 2
        assert paths(orcid)[1] == f"/v3.0/{RESEARCHER}/qualification/17"

    def test_wanted_sees_every_summary_and_nothing_wanted_costs_one_call(self, orcid, client):
        serve_record(orcid, qualifications(40))
        seen = []

        found = client.read_qualifications(RESEARCHER, wanted=lambda q: seen.append(q.put_code))

        assert found == []
        assert seen == list(range(1, 41))
        assert len(orcid.calls) == 1


class TestConcurrentItemReads:
    @staticmethod
    def serve_items_through_barrier(rsps, items, parties):
        """Item reads must all be in flight at once to get past the barrier."""
        barrier = threading.Barrier(parties, timeout=5)
        lock = threading.Lock()
        state = {"now": 0, "peak": 0}
        by_code = {item["put-code"]: item for item in items}

        def answer(request):
            with lock:
                state["now"] += 1
                state["peak"] = max(state["peak"], state["now"])
            try:
                barrier.wait()  # raises BrokenBarrierError if the reads do not overlap
            finally:
                with lock:
                    state["now"] -= 1
            put_code = int(request.path_url.rsplit("/", 1)[1])
            return 200, {}, json.dumps(by_code[put_code])

        rsps.add_callback(
            responses.GET,
            re.compile(re.escape(f"{API}/{RESEARCHER}/qualification/") + r"\d+"),
            callback=answer,
            content_type=ORCID_TYPE,
        )
        return state

    def test_thirty_candidates_are_all_read_at_the_same_time(self, orcid, client):
        items = qualifications(30)
        serve(orcid, f"/{RESEARCHER}/qualifications", orcid_json.summaries(RESEARCHER, items))
        state = self.serve_items_through_barrier(orcid, items, parties=30)

        found = client.read_qualifications(RESEARCHER)

        assert [q.put_code for q in found] == list(range(1, 31))
        assert state["peak"] == 30
        assert len(orcid.calls) == 31

    def test_reads_in_flight_never_exceed_max_concurrency(self, orcid, make_client):
        client = make_client(max_concurrency=4)
        items = qualifications(8)
        serve(orcid, f"/{RESEARCHER}/qualifications", orcid_json.summaries(RESEARCHER, items))
        state = self.serve_items_through_barrier(orcid, items, parties=4)

        found = client.read_qualifications(RESEARCHER)

        assert [q.put_code for q in found] == list(range(1, 9))
        assert state["peak"] == 4


class TestItemReads:
    def test_item_wins_when_it_disagrees_with_its_summary(self, orcid, client):
        summary = orcid_json.qualification(5, owner=RESEARCHER, end="2099-12-31")
        item = orcid_json.qualification(5, owner=RESEARCHER, end="2020-06-30", title="Renamed")
        serve(orcid, f"/{RESEARCHER}/qualifications", orcid_json.summaries(RESEARCHER, [summary]))
        serve(orcid, f"/{RESEARCHER}/qualification/5", item)
        seen = []

        found = client.read_qualifications(RESEARCHER, wanted=lambda q: seen.append(q) or True)

        assert seen[0].end == FuzzyDate(2099, 12, 31)
        assert [(q.put_code, q.end, q.title) for q in found] == [
            (5, FuzzyDate(2020, 6, 30), "Renamed")
        ]

    def test_item_deleted_between_the_two_reads_is_skipped(self, orcid, client):
        items = qualifications(3)
        serve(orcid, f"/{RESEARCHER}/qualifications", orcid_json.summaries(RESEARCHER, items))
        serve(orcid, f"/{RESEARCHER}/qualification/1", items[0])
        serve(orcid, f"/{RESEARCHER}/qualification/2", orcid_json.error(404, 9016), status=404)
        serve(orcid, f"/{RESEARCHER}/qualification/3", items[2])

        found = client.read_qualifications(RESEARCHER)

        assert [q.put_code for q in found] == [1, 3]
        assert calls_to(orcid, f"{API}/{RESEARCHER}/qualification/2") == 1

    def test_an_item_in_the_wrong_shape_is_unreadable_and_the_others_still_count(
        self, orcid, client
    ):
        items = qualifications(3)
        serve(orcid, f"/{RESEARCHER}/qualifications", orcid_json.summaries(RESEARCHER, items))
        serve(orcid, f"/{RESEARCHER}/qualification/1", items[0])
        serve(orcid, f"/{RESEARCHER}/qualification/2", {**items[1], "put-code": None})
        serve(orcid, f"/{RESEARCHER}/qualification/3", {**items[2], "put-code": 4})

        first, second, third = client.read_qualifications(RESEARCHER)

        assert isinstance(first, Qualification) and first.put_code == 1
        assert isinstance(second, UnreadableItem) and second.put_code == 2
        assert second.title == items[1]["role-title"]
        assert isinstance(third, UnreadableItem) and third.problem == "ORCID sent another item"

    def test_an_unreadable_summary_is_read_in_full_by_its_put_code(self, orcid, client):
        [item] = qualifications(1)
        broken = {**item, "start-date": {"year": None, "month": {"value": "01"}}}
        serve(orcid, f"/{RESEARCHER}/qualifications", orcid_json.summaries(RESEARCHER, [broken]))
        serve(orcid, f"/{RESEARCHER}/qualification/1", item)

        [read] = client.read_qualifications(RESEARCHER)

        assert isinstance(read, Qualification)  # the full item is authoritative

    def test_json_nested_past_the_stack_is_a_malformed_response(self, orcid, client):
        orcid.add(
            responses.GET,
            f"{API}/{RESEARCHER}/qualifications",
            body="[" * 200_000 + "]" * 200_000,
            content_type="application/vnd.orcid+json",
        )
        with pytest.raises(MalformedResponse):
            client.read_qualifications(RESEARCHER)


class TestRetries:
    SUMMARY = f"{API}/{RESEARCHER}/qualifications"

    def test_429_with_retry_after_zero_is_retried_and_then_succeeds(self, orcid, client):
        orcid.add(
            responses.GET,
            self.SUMMARY,
            status=429,
            headers={"Retry-After": "0"},
            body="Too Many Requests. You have exceeded the daily quota.",
            content_type="text/plain",
        )
        serve_record(orcid, qualifications(1))

        found = client.read_qualifications(RESEARCHER)

        assert [q.put_code for q in found] == [1]
        assert calls_to(orcid, self.SUMMARY) == 2

    @pytest.mark.parametrize("max_retries", [0, 1, 3], ids=["no-retry", "one-retry", "three"])
    def test_503_forever_gives_up_after_max_retries_plus_one_calls(
        self, orcid, make_client, max_retries
    ):
        client = make_client(max_retries=max_retries)
        orcid.add(responses.GET, self.SUMMARY, status=503, body="", content_type="text/html")

        with pytest.raises(OrcidUnavailable) as raised:
            client.read_qualifications(RESEARCHER)

        assert raised.value.reason == "orcid_unavailable"
        assert calls_to(orcid, self.SUMMARY) == max_retries + 1

    @pytest.mark.parametrize(
        "retry_after",
        [
            "120",
            email.utils.format_datetime(
                dt.datetime.now(dt.UTC) + dt.timedelta(hours=1), usegmt=True
            ),
        ],
        ids=["seconds", "http-date"],
    )
    @pytest.mark.parametrize("status", [429, 503], ids=["429", "503"])
    def test_retry_after_beyond_the_total_timeout_gives_up_at_once(
        self, orcid, client, status, retry_after
    ):
        orcid.add(
            responses.GET,
            self.SUMMARY,
            status=status,
            headers={"Retry-After": retry_after},
            body="",
            content_type="text/plain",
        )

        with pytest.raises(OrcidUnavailable):
            client.read_qualifications(RESEARCHER)

        assert calls_to(orcid, self.SUMMARY) == 1

    def test_a_retry_after_that_is_no_ascii_number_is_ignored(self, orcid, client):
        # "²" passes str.isdigit(), and float() refuses it.
        orcid.add(responses.GET, self.SUMMARY, status=503, headers={"Retry-After": "²"}, body="")

        with pytest.raises(OrcidUnavailable):
            client.read_qualifications(RESEARCHER)

        assert calls_to(orcid, self.SUMMARY) > 1  # retried on the client's own backoff

    @pytest.mark.parametrize(
        "failure",
        [requests.ConnectionError("refused"), requests.ReadTimeout("read timed out")],
        ids=["connection-error", "read-timeout"],
    )
    def test_transport_failures_are_retried_then_unavailable(self, orcid, client, failure):
        orcid.add(responses.GET, self.SUMMARY, body=failure)

        with pytest.raises(OrcidUnavailable) as raised:
            client.read_qualifications(RESEARCHER)

        assert calls_to(orcid, self.SUMMARY) == client.max_retries + 1
        assert isinstance(raised.value.__cause__, requests.RequestException)

    def test_connection_error_then_success_returns_the_items(self, orcid, client):
        orcid.add(responses.GET, self.SUMMARY, body=requests.ConnectionError("reset"))
        serve_record(orcid, qualifications(2))

        found = client.read_qualifications(RESEARCHER)

        assert [q.put_code for q in found] == [1, 2]
        assert calls_to(orcid, self.SUMMARY) == 2

    def test_failing_item_read_is_retried_on_its_own(self, orcid, client):
        items = qualifications(2)
        serve(orcid, f"/{RESEARCHER}/qualifications", orcid_json.summaries(RESEARCHER, items))
        serve(orcid, f"/{RESEARCHER}/qualification/1", items[0])
        orcid.add(responses.GET, f"{API}/{RESEARCHER}/qualification/2", status=502, body="")
        serve(orcid, f"/{RESEARCHER}/qualification/2", items[1])

        found = client.read_qualifications(RESEARCHER)

        assert [q.put_code for q in found] == [1, 2]
        assert calls_to(orcid, self.SUMMARY) == 1
        assert calls_to(orcid, f"{API}/{RESEARCHER}/qualification/2") == 2


class TestOrcidErrors:
    SUMMARY = f"/{RESEARCHER}/qualifications"

    @pytest.mark.parametrize(
        "status, body, error, reason",
        [
            (404, orcid_json.error(404, 9016), RecordNotFound, "record_not_found"),
            (
                401,
                {
                    "error": "invalid_token",
                    "error_description": f"Invalid access token: {RESEARCHER_TOKEN}",
                },
                TokenInvalid,
                "token_invalid",
            ),
            (409, orcid_json.error(409, 9018), RecordLocked, "record_locked"),
            (409, orcid_json.error(409, 9044), RecordDeactivated, "record_deactivated"),
            (409, orcid_json.error(409, 9036), RecordUnclaimed, "record_unclaimed"),
            (403, orcid_json.error(403, 9039), AccessForbidden, "access_forbidden"),
            (500, orcid_json.error(500, 9008), OrcidUnavailable, "orcid_unavailable"),
            (400, orcid_json.error(400, 9006), OrcidError, "orcid_error"),
        ],
        ids=[
            "404-9016-not-found",
            "401-invalid-token",
            "409-9018-locked",
            "409-9044-deactivated",
            "409-9036-unclaimed",
            "403-9039-not-public",
            "500-unavailable-not-retried",
            "400-9006-generic",
        ],
    )
    def test_orcid_error_answers_become_typed_errors_without_retrying(
        self, orcid, client, status, body, error, reason
    ):
        serve(orcid, self.SUMMARY, body, status=status)

        with pytest.raises(OrcidError) as raised:
            client.read_qualifications(RESEARCHER, token=RESEARCHER_TOKEN)

        assert type(raised.value) is error
        assert raised.value.reason == reason
        assert len(orcid.calls) == 1

    @pytest.mark.parametrize(
        "body, headers",
        [
            (
                orcid_json.error(
                    301, 9007, f"This account is deprecated. Please refer to account: {PRIMARY}"
                ),
                {},
            ),
            (
                orcid_json.error(301, 9007, "This account is deprecated."),
                {"Location": f"{API}/{PRIMARY}/qualifications"},
            ),
            (
                load("error-301-deprecated.json"),
                {"Location": f"{API}/{PRIMARY}/qualifications"},
            ),
        ],
        ids=["message-names-primary", "location-names-primary", "orcids-real-9007-message"],
    )
    def test_deprecated_record_names_its_primary_id(self, orcid, client, body, headers):
        serve(orcid, self.SUMMARY, body, status=301, headers=headers)

        with pytest.raises(RecordDeprecated) as raised:
            client.read_qualifications(RESEARCHER)

        assert raised.value.reason == "record_deprecated"
        assert raised.value.primary_orcid == PRIMARY
        assert len(orcid.calls) == 1  # a 301 is an answer, not a redirect to follow

    @pytest.mark.parametrize(
        "body, content_type",
        [
            ("<html><body>Oops an error happened!</body></html>", "text/html"),
            ("{not json", ORCID_TYPE),
            (json.dumps({"affiliation-group": {"summaries": []}}), ORCID_TYPE),
            (json.dumps([{"affiliation-group": []}]), ORCID_TYPE),
            (
                json.dumps({"affiliation-group": [{"summaries": [{"employment-summary": {}}]}]}),
                ORCID_TYPE,
            ),
        ],
        ids=[
            "html-page",
            "invalid-json",
            "affiliation-group-not-a-list",
            "list-not-object",
            "wrong-summary-wrapper",
        ],
    )
    def test_answer_not_in_orcids_shape_is_a_malformed_response(
        self, orcid, client, body, content_type
    ):
        orcid.add(responses.GET, API + self.SUMMARY, body=body, content_type=content_type)

        with pytest.raises(MalformedResponse) as raised:
            client.read_qualifications(RESEARCHER)

        assert raised.value.reason == "malformed_response"
        assert len(orcid.calls) == 1

    @pytest.mark.parametrize(
        "value",
        ["0000-0002-1825-0098", "0000-0002-1825-009", "not-an-orcid", "", None],
        ids=["wrong-check-digit", "too-short", "words", "empty", "none"],
    )
    def test_invalid_orcid_id_is_refused_before_any_call(self, orcid, client, value):
        with pytest.raises(InvalidOrcidId) as raised:
            client.read_qualifications(value)

        assert raised.value.reason == "invalid_orcid_id"
        assert len(orcid.calls) == 0

    def test_invalid_orcid_id_does_not_fetch_a_client_token(self, orcid, make_client):
        client = make_client(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
        orcid.add(responses.POST, TOKEN_URL, json=load("token-client-credentials.json"))

        with pytest.raises(InvalidOrcidId):
            client.read_qualifications("0000-0002-1825-0098")

        assert len(orcid.calls) == 0


class TestRecordStatusCheck:
    PUB = "https://pub.orcid.org/v3.0"

    @pytest.mark.parametrize(
        "body, error",
        [
            (orcid_json.error(409, 9018), RecordLocked),
            (orcid_json.error(409, 9044), RecordDeactivated),
        ],
        ids=["locked", "deactivated"],
    )
    def test_person_conflict_refuses_even_though_qualifications_answer(
        self, orcid, make_client, body, error
    ):
        client = make_client(check_record_status=True)
        serve_record(orcid, qualifications(1))
        serve(orcid, f"/{RESEARCHER}/person", body, status=409)

        with pytest.raises(error):
            client.read_qualifications(RESEARCHER)

        assert calls_to(orcid, f"{API}/{RESEARCHER}/person") == 1
        assert calls_to(orcid, f"{API}/{RESEARCHER}/qualification/1") == 0

    def test_readable_person_lets_the_items_through(self, orcid, make_client):
        client = make_client(check_record_status=True)
        serve_record(orcid, qualifications(2))
        serve(orcid, f"/{RESEARCHER}/person", {"path": f"/{RESEARCHER}/person"})

        found = client.read_qualifications(RESEARCHER)

        assert [q.put_code for q in found] == [1, 2]
        assert sorted(paths(orcid)[:2]) == [
            f"/v3.0/{RESEARCHER}/person",
            f"/v3.0/{RESEARCHER}/qualifications",
        ]
        assert len(orcid.calls) == 4

    @pytest.mark.parametrize(
        "api_url, expected",
        [
            ("https://pub.orcid.org/v3.0", True),
            ("https://pub.sandbox.orcid.org/v3.0/", True),
            ("https://api.orcid.org/v3.0", False),
            ("https://api.sandbox.orcid.org/v3.0", False),
            (API, False),
        ],
        ids=["public-api", "public-sandbox", "member-api", "member-sandbox", "test-host"],
    )
    def test_check_is_on_by_default_only_for_the_public_api(self, make_client, api_url, expected):
        assert make_client(api_url).check_record_status is expected

    def test_public_api_by_default_refuses_a_locked_record(self, orcid, make_client):
        client = make_client(self.PUB)
        serve_record(orcid, qualifications(1), api=self.PUB)
        serve(orcid, f"/{RESEARCHER}/person", orcid_json.error(409, 9018), status=409, api=self.PUB)

        with pytest.raises(RecordLocked):
            client.read_qualifications(RESEARCHER)

        assert calls_to(orcid, f"{self.PUB}/{RESEARCHER}/person") == 1

    def test_other_hosts_by_default_never_ask_for_person(self, orcid, client):
        serve_record(orcid, qualifications(1))

        found = client.read_qualifications(RESEARCHER)

        assert [q.put_code for q in found] == [1]
        assert f"/v3.0/{RESEARCHER}/person" not in paths(orcid)
        assert len(orcid.calls) == 2


class TestClientCredentials:
    @pytest.fixture
    def app_client(self, make_client):
        return make_client(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)

    @staticmethod
    def token_calls(rsps):
        return [call for call in rsps.calls if call.request.url == TOKEN_URL]

    def test_one_read_public_token_serves_two_reads(self, orcid, app_client):
        orcid.add(responses.POST, TOKEN_URL, json=load("token-client-credentials.json"))
        serve_record(orcid, qualifications(1))

        app_client.read_qualifications(RESEARCHER)
        app_client.read_qualifications(RESEARCHER)

        [token_call] = self.token_calls(orcid)
        request = token_call.request
        assert request.method == "POST"
        assert request.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
        # client_secret_post: credentials in the form, no HTTP Basic header.
        assert "Authorization" not in request.headers
        assert parse_qs(request.body) == {
            "grant_type": ["client_credentials"],
            "scope": ["/read-public"],
            "client_id": [CLIENT_ID],
            "client_secret": [CLIENT_SECRET],
        }
        api_calls = [call for call in orcid.calls if call.request.url.startswith(API)]
        assert len(api_calls) == 4
        assert {call.request.headers["Authorization"] for call in api_calls} == {
            f"Bearer {APP_TOKEN}"
        }

    def test_rejected_client_credentials_are_an_orcid_error(self, orcid, app_client):
        orcid.add(responses.POST, TOKEN_URL, status=401, json=load("token-invalid-client.json"))
        serve_record(orcid, qualifications(1))

        with pytest.raises(OrcidError) as raised:
            app_client.read_qualifications(RESEARCHER)

        assert type(raised.value) is OrcidError
        assert raised.value.reason == "orcid_error"
        assert len(self.token_calls(orcid)) == 1
        assert len(orcid.calls) == 1  # ORCID's API is never asked without a token

    def test_a_token_whose_expiry_is_past_any_clock_is_an_orcid_error(self, orcid, app_client):
        answer = json.dumps({**load("token-client-credentials.json"), "expires_in": 1})
        body = answer.replace('"expires_in": 1', '"expires_in": 1e400')  # JSON's number
        orcid.add(responses.POST, TOKEN_URL, body=body, content_type="application/json")

        with pytest.raises(OrcidError) as raised:
            app_client.read_qualifications(RESEARCHER)

        assert raised.value.reason == "orcid_error"
        assert len(orcid.calls) == 1  # ORCID's API is never asked without a token

    def test_token_endpoint_down_is_unavailable(self, orcid, app_client):
        orcid.add(responses.POST, TOKEN_URL, status=503, body="", content_type="text/html")

        with pytest.raises(OrcidUnavailable):
            app_client.read_qualifications(RESEARCHER)

        assert len(orcid.calls) == 1

    def test_a_token_endpoint_that_redirects_is_not_followed(self, orcid, app_client):
        elsewhere = "https://elsewhere.example/oauth/token"
        orcid.add(responses.POST, TOKEN_URL, status=307, headers={"Location": elsewhere})
        orcid.add(responses.POST, elsewhere, json=load("token-client-credentials.json"))

        with pytest.raises(OrcidUnavailable):
            app_client.read_qualifications(RESEARCHER)

        assert [call.request.url for call in orcid.calls] == [TOKEN_URL]  # no secret sent on

    def test_a_token_answer_over_the_size_cap_is_unavailable(self, orcid, make_client):
        app_client = make_client(
            client_id=CLIENT_ID, client_secret=CLIENT_SECRET, max_body_bytes=4096
        )
        answer = {**load("token-client-credentials.json"), "padding": "x" * 8192}
        orcid.add(responses.POST, TOKEN_URL, json=answer)

        with pytest.raises(OrcidUnavailable):
            app_client.read_qualifications(RESEARCHER)

        assert len(orcid.calls) == 1  # ORCID's API is never asked without a token

    def test_researchers_token_bypasses_the_client_token(self, orcid, app_client):
        orcid.add(responses.POST, TOKEN_URL, json=load("token-client-credentials.json"))
        serve_record(orcid, qualifications(1))

        app_client.read_qualifications(RESEARCHER, token=RESEARCHER_TOKEN)

        assert self.token_calls(orcid) == []
        assert [call.request.headers["Authorization"] for call in orcid.calls] == [
            f"Bearer {RESEARCHER_TOKEN}"
        ] * 2

    def test_client_token_refused_by_the_api_is_fetched_afresh_next_time(self, orcid, app_client):
        orcid.add(responses.POST, TOKEN_URL, json=load("token-client-credentials.json"))
        second = {"access_token": "second-token", "token_type": "bearer", "expires_in": 3600}
        orcid.add(responses.POST, TOKEN_URL, json=second)
        serve(
            orcid,
            f"/{RESEARCHER}/qualifications",
            {"error": "invalid_token", "error_description": f"Invalid access token: {APP_TOKEN}"},
            status=401,
        )
        serve_record(orcid, qualifications(1))

        with pytest.raises(TokenInvalid):
            app_client.read_qualifications(RESEARCHER)
        found = app_client.read_qualifications(RESEARCHER)

        assert [q.put_code for q in found] == [1]
        assert len(self.token_calls(orcid)) == 2
        assert orcid.calls[-1].request.headers["Authorization"] == "Bearer second-token"


class TestSecretsStayOutOfLogs:
    SUMMARY = f"{API}/{RESEARCHER}/qualifications"

    @staticmethod
    def assert_absent(caplog, raised, *secrets):
        logged = [record.getMessage() for record in caplog.records] + [caplog.text]
        for secret in secrets:
            assert not any(secret in text for text in logged)
            assert secret not in str(raised.value)

    @pytest.mark.parametrize(
        "answer",
        [
            {"status": 503, "body": ""},
            {"body": requests.ConnectionError("refused")},
        ],
        ids=["503-retried", "connection-error-retried"],
    )
    def test_retried_failures_log_warnings_without_the_token(self, orcid, client, caplog, answer):
        caplog.set_level(logging.DEBUG)
        orcid.add(responses.GET, self.SUMMARY, **answer)

        with pytest.raises(OrcidUnavailable) as raised:
            client.read_qualifications(RESEARCHER, token=RESEARCHER_TOKEN)

        assert any(record.levelno == logging.WARNING for record in caplog.records)
        self.assert_absent(caplog, raised, RESEARCHER_TOKEN)

    def test_revoked_researcher_token_is_not_logged(self, orcid, client, caplog):
        caplog.set_level(logging.DEBUG)
        body = {
            "error": "invalid_token",
            "error_description": f"Invalid access token: {RESEARCHER_TOKEN}",
        }
        serve(orcid, f"/{RESEARCHER}/qualifications", body, status=401)

        with pytest.raises(TokenInvalid) as raised:
            client.read_qualifications(RESEARCHER, token=RESEARCHER_TOKEN)

        self.assert_absent(caplog, raised, RESEARCHER_TOKEN)

    def test_rejected_client_secret_is_not_logged(self, orcid, make_client, caplog):
        caplog.set_level(logging.DEBUG)
        client = make_client(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
        orcid.add(responses.POST, TOKEN_URL, status=401, json=load("token-invalid-client.json"))

        with pytest.raises(OrcidError) as raised:
            client.read_qualifications(RESEARCHER)

        self.assert_absent(caplog, raised, CLIENT_SECRET)

    def test_app_token_is_not_logged_when_the_item_reads_fail(self, orcid, make_client, caplog):
        caplog.set_level(logging.DEBUG)
        client = make_client(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
        orcid.add(responses.POST, TOKEN_URL, json=load("token-client-credentials.json"))
        items = qualifications(2)
        serve(orcid, f"/{RESEARCHER}/qualifications", orcid_json.summaries(RESEARCHER, items))
        orcid.add(responses.GET, f"{API}/{RESEARCHER}/qualification/1", status=503, body="")
        serve(orcid, f"/{RESEARCHER}/qualification/2", orcid_json.error(404, 9016), status=404)

        with pytest.raises(OrcidUnavailable) as raised:
            client.read_qualifications(RESEARCHER)

        assert any(record.levelno == logging.WARNING for record in caplog.records)
        self.assert_absent(caplog, raised, APP_TOKEN, CLIENT_SECRET)


class TestBoundedReads:
    def test_a_record_with_thousands_of_candidates_is_refused_after_one_read(
        self, orcid, make_client
    ):
        client = make_client(max_items=50)
        items = qualifications(3_000)
        serve(orcid, f"/{RESEARCHER}/qualifications", orcid_json.summaries(RESEARCHER, items))

        with pytest.raises(TooManyCandidates) as raised:
            client.read_qualifications(RESEARCHER)

        assert paths(orcid) == [f"/v3.0/{RESEARCHER}/qualifications"]
        assert raised.value.reason == "too_many_candidates"
        assert "3000 entries" in raised.value.message and "at most 50" in raised.value.message

    def test_exactly_the_limit_is_read_in_full(self, orcid, make_client):
        client = make_client(max_items=3)
        serve_record(orcid, qualifications(3))
        assert [q.put_code for q in client.read_qualifications(RESEARCHER)] == [1, 2, 3]

    def test_a_put_code_repeated_in_the_summary_is_read_once(self, orcid, client):
        [item] = qualifications(1)
        summary = orcid_json.summaries(RESEARCHER, [item, item, item])
        serve(orcid, f"/{RESEARCHER}/qualifications", summary)
        serve(orcid, f"/{RESEARCHER}/qualification/1", item)

        assert [q.put_code for q in client.read_qualifications(RESEARCHER)] == [1]
        assert paths(orcid).count(f"/v3.0/{RESEARCHER}/qualification/1") == 1
