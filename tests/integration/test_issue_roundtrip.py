"""What a policy's ``issue:`` section writes, POSTed to the ORCID emulator, read back by our
parser and judged by ``decide()``: it counts as self-issued."""

from __future__ import annotations

import datetime as dt
import textwrap

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from app.decision import decide
from app.emulator import create_app
from app.orcid_writer import qualification_body as issue_body
from app.policy import load_policy
from app.qualifications import read_item

SERVICE_CLIENT = "APP-GATEKEEPERTEST01"
OTHER_CLIENT = "APP-OTHERSERVICE0001"
REDIRECT = "http://127.0.0.1:5000/callback"
ORCID_JSON = "application/vnd.orcid+json"
EMPTY = "0009-0000-0000-0113"  # a persona with no qualifications

POLICY = """\
version: 1
qualifications:
  sail-dua:
    title: Accepted the SAIL data access agreement
    sources: [self-issued]
    issue:
      organization: {name: SAIL Databank, city: Swansea, country: GB, ror: 053fq8t95}
      url: https://example.org/sail/dua
      external_id: {type: other-id, value: "sail-dua-{orcid}"}
      valid_for_days: 365
      accept_terms: {url: https://example.org/sail/dua, version: "2026-1"}
datasets:
  sail:
    paths: [/datasets/sail/]
    require: [sail-dua]
"""


@pytest.fixture(scope="module")
def orcid():
    clients = [
        {
            "client_id": client_id,
            "client_secret": "secret",
            "name": name,
            "member": True,
            "redirect_uris": "any-loopback",
        }
        for client_id, name in ((SERVICE_CLIENT, "Gatekeeper"), (OTHER_CLIENT, "Other"))
    ]
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return create_app(clients=clients, signing_key=key).test_client()


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    path = tmp_path_factory.mktemp("policy") / "policy.yaml"
    path.write_text(textwrap.dedent(POLICY))
    return load_policy(path)


def write_token(orcid, client_id: str, persona: str = "empty") -> str:
    response = orcid.get(
        "/oauth/authorize",
        query_string={
            "client_id": client_id,
            "response_type": "code",
            "scope": "/read-limited /activities/update",
            "redirect_uri": REDIRECT,
            "persona": persona,
            "decision": "authorize",
        },
    )
    code = response.headers["Location"].split("code=")[1].split("&")[0]
    response = orcid.post(
        "/oauth/token",
        data={
            "client_id": client_id,
            "client_secret": "secret",
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
        },
    )
    return response.get_json()["access_token"]


def post_issued(orcid, policy, token: str, today: dt.date):
    body = issue_body(policy.qualifications["sail-dua"], EMPTY, today)
    return orcid.post(
        f"/api/v3.0/{EMPTY}/qualification",
        json=body,
        headers={
            "Accept": ORCID_JSON,
            "Content-Type": ORCID_JSON,
            "Authorization": f"Bearer {token}",
        },
    )


def read_back(orcid, token: str, location: str):
    path = location.split("http://localhost", 1)[1]
    response = orcid.get(path, headers={"Accept": ORCID_JSON, "Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    return read_item(response.get_json())


@pytest.fixture(autouse=True)
def fresh(orcid):
    orcid.post("/_emulator/reset")


class TestIssuedQualification:
    def test_what_we_write_counts_as_self_issued(self, orcid, policy):
        token = write_token(orcid, SERVICE_CLIENT)
        today = dt.datetime.now(dt.UTC).date()
        response = post_issued(orcid, policy, token, today)
        assert response.status_code == 201, response.get_data(as_text=True)
        item = read_back(orcid, token, response.headers["Location"])
        assert item.source.source_client_id == SERVICE_CLIENT
        decision = decide(
            policy,
            policy.dataset("sail"),
            [item],
            orcid=EMPTY,
            now=dt.datetime.now(dt.UTC),
            own_client_id=SERVICE_CLIENT,
        )
        assert decision.allowed, decision.to_dict()

    def test_the_same_item_written_by_another_client_does_not_count(self, orcid, policy):
        token = write_token(orcid, OTHER_CLIENT)
        response = post_issued(orcid, policy, token, dt.datetime.now(dt.UTC).date())
        item = read_back(orcid, token, response.headers["Location"])
        decision = decide(
            policy,
            policy.dataset("sail"),
            [item],
            orcid=EMPTY,
            now=dt.datetime.now(dt.UTC),
            own_client_id=SERVICE_CLIENT,
        )
        assert not decision.allowed

    def test_it_stops_counting_after_valid_for_days(self, orcid, policy):
        token = write_token(orcid, SERVICE_CLIENT)
        today = dt.datetime.now(dt.UTC).date()
        item = read_back(orcid, token, post_issued(orcid, policy, token, today).headers["Location"])
        later = dt.datetime.combine(today + dt.timedelta(days=366), dt.time(12), dt.UTC)
        decision = decide(
            policy, policy.dataset("sail"), [item], orcid=EMPTY, now=later,
            own_client_id=SERVICE_CLIENT,
        )  # fmt: skip
        assert not decision.allowed

    def test_writing_twice_is_orcids_already_added(self, orcid, policy):
        token = write_token(orcid, SERVICE_CLIENT)
        today = dt.datetime.now(dt.UTC).date()
        first = post_issued(orcid, policy, token, today)
        second = post_issued(orcid, policy, token, today + dt.timedelta(days=1))
        assert second.status_code == 409
        assert second.get_json()["error-code"] == 9021
        put_code = first.headers["Location"].rsplit("/", 1)[1]
        assert f"put-code {put_code}." in second.get_json()["developer-message"]
