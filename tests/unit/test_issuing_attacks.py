"""Attacks on issuing (earn flow, steward writes, the Issuer, kept write tokens).

A security review of 14aa7eb/50d69df/319e7be. Tests marked ``xfail(strict=True)`` show
a real bug (they pass once it is fixed, and then must lose the mark); the others pin
behaviour that is correct and must stay so.

ORCID is played by fakes: ``Record`` reads (as a member API read with our token shows a
record) and ``Writer`` writes (POST/PUT/DELETE, with ORCID's source rules); the token
endpoint by ``responses``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import secrets
import textwrap
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import redis
import requests
import responses
from cryptography.fernet import Fernet

from app import create_app
from app.access import AccessChecker
from app.cache import MemoryStore, RedisStore, session_record
from app.decision import decide
from app.decision_log import MemoryDecisionLog
from app.errors import MalformedResponse, OrcidUnavailable
from app.issuing import Issuer, NoWriteToken, WriteUncertain
from app.orcid_writer import AlreadyAdded, NotOurItem, WriteError
from app.policy import load_policy
from app.qualifications import parse_qualification
from app.settings import Settings
from app.write_tokens import WriteToken, WriteTokens
from tests import orcid_json

RESEARCHER = "0000-0002-1825-0097"
OTHER = "0000-0001-5109-3700"
STEWARD = "0000-0003-1415-9269"
CLIENT_ID = "APP-GATEKEEPER000001"
OTHER_CLIENT = "APP-SOMEONEELSE00001"
TOKEN_URL = "https://orcid.org/oauth/token"
REVOKE_URL = "https://orcid.org/oauth/revoke"
TODAY = dt.date(2026, 6, 1)

POLICY = """
version: 1
qualifications:
  dua:
    title: Accepted the agreement
    sources: [self-issued]
    issue:
      organization: {name: SAIL Databank, city: Swansea, country: GB, ror: 053fq8t95}
      external_id: {type: other-id, value: "dua-{version}-{orcid}"}
      valid_for_days: 365
      accept_terms: {url: https://example.org/dua, version: "VERSION"}
  induction:
    title: Completed the induction
    sources: [self-issued]
    issue:
      organization: {name: SAIL Databank, city: Swansea, country: GB, ror: 053fq8t95}
      external_id: {type: other-id, value: "induction-{orcid}"}
      valid_for_days: 730
      steward: true
datasets:
  agreed:
    paths: [/datasets/agreed/]
    require: [dua]
  inducted:
    paths: [/datasets/inducted/]
    require: [induction]
"""


def policy_text(version: str = "1") -> str:
    return textwrap.dedent(POLICY).lstrip().replace("VERSION", version)


# --- fakes: ORCID's record, read and written ------------------------------------------


class Record:
    """Items per iD, read as the member API shows them to our client's token."""

    def __init__(self):
        self.items: dict[str, list[dict]] = {}
        self.tokens: list[str | None] = []
        self.fail_reads = False

    def add(self, orcid: str, item: dict) -> None:
        self.items.setdefault(orcid, []).append(item)

    def read_qualifications(self, orcid, wanted=lambda q: True, token=None):
        self.tokens.append(token)
        if self.fail_reads:
            from app.errors import OrcidUnavailable

            raise OrcidUnavailable()
        parsed = [parse_qualification(d) for d in self.items.get(orcid, [])]
        return [q for q in parsed if wanted(q)]


def our_item(put_code, orcid, *, title, ext_value, start="2026-01-10", end="2027-01-10", **src):
    return orcid_json.qualification(
        put_code,
        owner=orcid,
        title=title,
        src=orcid_json.source(client_id=CLIENT_ID, name="Gatekeeper", **src),
        start=start,
        end=end,
        org_name="SAIL Databank",
        org_id="https://ror.org/053fq8t95",
        external_ids=[("other-id", ext_value, "self")],
    )


class Writer:
    """ORCID's writes, with its rules: only the source may PUT or DELETE (9010); a second
    POST with the same ``self`` external ID by the same source is 9021."""

    def __init__(self, record: Record, *, location: bool = True):
        self.record, self.location = record, location
        self.calls: list[tuple] = []
        self._next = 5000

    def _ours(self, orcid, put_code):
        for item in self.record.items.get(orcid, []):
            if item["put-code"] == put_code:
                return item
        return None

    def add(self, orcid, token, body):
        self.calls.append(("POST", orcid))
        ext = body["external-ids"]["external-id"][0]["external-id-value"]
        for item in self.record.items.get(orcid, []):
            src = item["source"].get("source-client-id") or {}
            values = [e["external-id-value"] for e in item["external-ids"]["external-id"]]
            if src.get("path") == CLIENT_ID and ext in values:
                raise AlreadyAdded(status=409, code=9021)
        self._next += 1
        self.record.add(
            orcid,
            our_item(
                self._next,
                orcid,
                title=body["role-title"],
                ext_value=ext,
                start=None,
                end=None,
            ),
        )
        if not self.location:
            raise WriteError(
                "ORCID added the item but did not say where (no Location).", status=201
            )
        return self._next

    def update(self, orcid, token, put_code, body):
        self.calls.append(("PUT", orcid, put_code))
        item = self._ours(orcid, put_code)
        if item is None or (item["source"].get("source-client-id") or {}).get("path") != CLIENT_ID:
            raise NotOurItem(status=403, code=9010)

    def delete(self, orcid, token, put_code):
        self.calls.append(("DELETE", orcid, put_code))
        item = self._ours(orcid, put_code)
        if item is None:
            return False
        if (item["source"].get("source-client-id") or {}).get("path") != CLIENT_ID:
            raise NotOurItem(status=403, code=9010)
        self.record.items[orcid].remove(item)
        return True


def kept(tokens: WriteTokens, orcid: str, access_token: str = "write-token") -> None:
    now = time.time()
    tokens.put(
        orcid, WriteToken(access_token, ("/activities/update", "/read-limited"), now + 3600, now)
    )


def make_issuer(record, writer, *, forget=None, log=None, tokens=None):
    tokens = tokens or WriteTokens(MemoryStore(), (Fernet.generate_key(),))
    log = log if log is not None else MemoryDecisionLog()
    issuer = Issuer(
        reader=record,
        writer=writer,
        tokens=tokens,
        client_id=CLIENT_ID,
        decision_log=log,
        forget_decisions=forget or (lambda orcid: True),
        clock=lambda: dt.datetime.combine(TODAY, dt.time(12), tzinfo=dt.UTC),
    )
    return issuer, tokens, log


def allowed(policy, dataset, record, orcid=RESEARCHER) -> bool:
    items = record.read_qualifications(orcid)
    now = dt.datetime.combine(TODAY, dt.time(12), tzinfo=dt.UTC)
    return decide(
        policy, policy.dataset(dataset), items, orcid=orcid, now=now, own_client_id=CLIENT_ID
    ).allowed


@pytest.fixture
def policy_file(tmp_path):
    def write(version: str = "1"):
        path = tmp_path / "policy.yaml"
        path.write_text(policy_text(version))
        return load_policy(path)

    return write


# --- the Issuer --------------------------------------------------------------------------


class TestIssuerIdentity:
    def test_a_terms_version_change_asks_for_the_new_terms(self, policy_file):
        old = policy_file("1")
        record = Record()
        record.add(
            RESEARCHER,
            our_item(
                4001, RESEARCHER, title="Accepted the agreement", ext_value=f"dua-1-{RESEARCHER}"
            ),
        )
        assert allowed(old, "agreed", record)  # the researcher accepted version 1
        new = policy_file("2")  # the terms change; the policy reloads
        # Accepting version 1 is no acceptance of version 2 (it opened it before).
        assert not allowed(new, "agreed", record)
        issuer, tokens, _ = make_issuer(record, Writer(record))
        kept(tokens, RESEARCHER)
        issuer.withdraw(RESEARCHER, new.qualifications["dua"], by="steward ann")
        assert not allowed(new, "agreed", record)
        assert allowed(old, "agreed", record) == bool(record.items.get(RESEARCHER))

    @pytest.mark.parametrize(
        "origin",
        [{"origin_orcid": RESEARCHER}, {"origin_client_id": OTHER_CLIENT}],
        ids=["assertion-origin-researcher", "on-behalf-of-another-client"],
    )
    def test_find_own_agrees_with_decide_on_what_is_self_issued(self, policy_file, origin):
        policy = policy_file("1")
        record = Record()
        record.add(
            RESEARCHER,
            our_item(
                4002,
                RESEARCHER,
                title="Accepted the agreement",
                ext_value=f"dua-1-{RESEARCHER}",
                **origin,
            ),
        )
        assert not allowed(policy, "agreed", record)  # decide: not self-issued
        issuer, tokens, _ = make_issuer(record, Writer(record))
        kept(tokens, RESEARCHER)
        try:
            result = issuer.issue(RESEARCHER, policy.qualifications["dua"], by="researcher")
        except WriteError:
            return  # saying it could not be done is a fine answer
        # Reported as issued/renewed: then the dataset must open.
        assert result.kind in ("issued", "renewed")
        assert allowed(policy, "agreed", record)

    def test_find_own_ignores_another_clients_item_with_our_external_id(self, policy_file):
        policy = policy_file("1")
        record = Record()
        copy = our_item(
            4003, RESEARCHER, title="Accepted the agreement", ext_value=f"dua-1-{RESEARCHER}"
        )
        copy["source"] = orcid_json.source(client_id=OTHER_CLIENT, name="Gatekeeper")
        record.add(RESEARCHER, copy)
        issuer, tokens, _ = make_issuer(record, Writer(record))
        assert issuer.find_own(RESEARCHER, "t", policy.qualifications["dua"]) is None
        kept(tokens, RESEARCHER)
        assert issuer.withdraw(RESEARCHER, policy.qualifications["dua"], by="x").put_codes == ()
        assert len(record.items[RESEARCHER]) == 1  # theirs is untouched

    def test_find_own_ignores_our_item_for_another_researcher_id(self, policy_file):
        """An item of ours whose external ID names another iD (copied across records)."""
        policy = policy_file("1")
        record = Record()
        record.add(
            RESEARCHER,
            our_item(4004, RESEARCHER, title="Accepted the agreement", ext_value=f"dua-1-{OTHER}"),
        )
        issuer, _, _ = make_issuer(record, Writer(record))
        assert issuer.find_own(RESEARCHER, "t", policy.qualifications["dua"]) is None

    def test_withdraw_by_put_code_only_deletes_this_qualifications_item(self, policy_file):
        policy = policy_file("1")
        record = Record()
        record.add(
            RESEARCHER,
            our_item(
                4005,
                RESEARCHER,
                title="Completed the induction",
                ext_value=f"induction-{RESEARCHER}",
            ),
        )
        issuer, tokens, log = make_issuer(record, Writer(record))
        kept(tokens, RESEARCHER)
        try:
            issuer.withdraw(RESEARCHER, policy.qualifications["dua"], by="steward", put_code=4005)
        except WriteError:
            pass
        assert [i["put-code"] for i in record.items[RESEARCHER]] == [4005]
        assert log.writes() == []


class TestIssuerWhenOrcidMisbehaves:
    def test_201_without_location_still_logs_the_write(self, policy_file):
        policy = policy_file("1")
        record = Record()
        forgotten = []
        issuer, tokens, log = make_issuer(
            record, Writer(record, location=False), forget=forgotten.append
        )
        kept(tokens, RESEARCHER)
        try:
            issuer.issue(RESEARCHER, policy.qualifications["dua"], by="researcher")
        except WriteError:
            pass
        assert len(record.items[RESEARCHER]) == 1  # ORCID has it
        assert [w.kind for w in log.writes()] == ["issued"]
        assert forgotten == [RESEARCHER]

    def test_409_9021_with_the_item_unreadable_is_a_write_error_and_nothing_logged(
        self, policy_file
    ):
        policy = policy_file("1")
        record = Record()

        class Conflict(Writer):
            def add(self, orcid, token, body):
                raise AlreadyAdded(status=409, code=9021)

        issuer, tokens, log = make_issuer(record, Conflict(record))
        kept(tokens, RESEARCHER)
        with pytest.raises(WriteError) as raised:
            issuer.issue(RESEARCHER, policy.qualifications["dua"], by="researcher")
        assert raised.value.code == 9021 and not isinstance(raised.value, AlreadyAdded)
        assert log.writes() == []

    def test_read_back_failure_is_success_with_unknown_visibility(self, policy_file):
        policy = policy_file("1")
        record = Record()
        writer = Writer(record)
        issuer, tokens, log = make_issuer(record, writer)
        kept(tokens, RESEARCHER)
        original = writer.add

        def add_then_fail_reads(*args):
            put_code = original(*args)
            record.fail_reads = True
            return put_code

        writer.add = add_then_fail_reads
        result = issuer.issue(RESEARCHER, policy.qualifications["dua"], by="researcher")
        assert result.kind == "issued" and result.visibility is None
        assert [w.kind for w in log.writes()] == ["issued"]

    def test_a_timed_out_write_that_cannot_be_looked_for_is_uncertain_not_nothing(
        self, policy_file
    ):
        # The POST timed out (it landed) and the record could not be read to look: the
        # researcher was told nothing was changed, and the cached refusal stayed.
        policy = policy_file("1")
        record = Record()
        writer = Writer(record)
        forgotten = []
        issuer, tokens, _ = make_issuer(record, writer, forget=forgotten.append)
        kept(tokens, RESEARCHER)
        original = writer.add

        def lands_then_times_out(*args):
            original(*args)
            record.fail_reads = True
            raise OrcidUnavailable()

        writer.add = lands_then_times_out
        with pytest.raises(WriteUncertain):
            issuer.issue(RESEARCHER, policy.qualifications["dua"], by="researcher")
        assert forgotten == [RESEARCHER]  # the next check reads the record afresh
        record.fail_reads = False
        assert allowed(policy, "agreed", record)

    def test_a_refused_token_is_forgotten_and_says_no_write_token(self, policy_file):
        from app.errors import TokenInvalid

        policy = policy_file("1")
        record = Record()

        def refuse(*a, **k):
            raise TokenInvalid()

        record.read_qualifications = refuse
        issuer, tokens, _ = make_issuer(record, Writer(record))
        kept(tokens, RESEARCHER)
        with pytest.raises(NoWriteToken):
            issuer.issue(RESEARCHER, policy.qualifications["dua"], by="researcher")
        assert tokens.get(RESEARCHER) is None

    def test_withdraw_says_so_when_cached_decisions_could_not_be_dropped(self, policy_file):
        policy = policy_file("1")
        record = Record()
        record.add(
            RESEARCHER,
            our_item(
                4006, RESEARCHER, title="Accepted the agreement", ext_value=f"dua-1-{RESEARCHER}"
            ),
        )
        issuer, tokens, _ = make_issuer(record, Writer(record), forget=lambda orcid: False)
        kept(tokens, RESEARCHER)
        withdrawn = issuer.withdraw(RESEARCHER, policy.qualifications["dua"], by="steward")
        assert withdrawn.put_codes == (4006,)
        assert withdrawn.decisions_dropped is False  # the caller says access may go on

    def test_a_withdrawal_that_happened_is_logged_even_if_redis_then_fails(self, policy_file):
        policy = policy_file("1")
        record = Record()
        record.add(
            RESEARCHER,
            our_item(
                4007, RESEARCHER, title="Accepted the agreement", ext_value=f"dua-1-{RESEARCHER}"
            ),
        )

        def redis_down(orcid):
            raise redis.ConnectionError("down")

        issuer, tokens, log = make_issuer(record, Writer(record), forget=redis_down)
        kept(tokens, RESEARCHER)
        withdrawn = issuer.withdraw(RESEARCHER, policy.qualifications["dua"], by="steward")
        assert withdrawn.decisions_dropped is False
        assert record.items[RESEARCHER] == []  # gone from ORCID
        assert [w.kind for w in log.writes()] == ["withdrawn"]


# --- kept tokens -------------------------------------------------------------------------


def test_a_write_tokens_repr_does_not_show_the_token():
    token = WriteToken("SECRET-WRITE-TOKEN", ("/activities/update",), time.time() + 60, 0.0)
    assert "SECRET-WRITE-TOKEN" not in repr(token)


def test_a_kept_token_is_bound_to_its_researcher():
    tokens = WriteTokens(MemoryStore(), (Fernet.generate_key(),))
    kept(tokens, RESEARCHER, "a-token")
    assert tokens.get(OTHER) is None
    assert tokens.get(RESEARCHER).access_token == "a-token"


class CountingDeadRedis:
    """A Redis that never answers; counts the commands that still reach it."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        def command(*args, **kwargs):
            self.calls.append(name)
            raise redis.ConnectionError("Redis is down")

        return command


def test_a_decision_does_not_wait_on_a_redis_that_is_known_down(policy_file, monkeypatch):
    import app.cache

    monkeypatch.setattr(app.cache, "_probe", lambda ref: None)  # no prober thread here
    policy_file("1")
    dead = CountingDeadRedis()
    store = RedisStore(dead)
    store.ping()  # (ping asks Redis itself)
    store.get_decision("v", RESEARCHER, "agreed")  # the breaker opens
    before = len(dead.calls)

    class File:
        current = load_policy_text()

    checker = AccessChecker(
        File(),
        Record(),
        store,
        write_tokens=WriteTokens(store, (Fernet.generate_key(),)),
        own_client_id=CLIENT_ID,
        decision_log=MemoryDecisionLog(),
    )
    for _ in range(3):
        checker.check(RESEARCHER, "agreed", fresh=True)
    assert dead.calls[before:] == []


def load_policy_text():
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / "policy.yaml"
    path.write_text(policy_text("1"))
    return load_policy(path)


# --- the web: the earn flow and the steward's forms ---------------------------------------


@pytest.fixture
def web(tmp_path):
    """An app on the test policy with a faked ORCID (reads and writes) and memory store."""
    (tmp_path / "policy.yaml").write_text(policy_text("1"))
    settings = Settings.from_env(
        {
            "SECRET_KEY": "unit-test-secret-key-0123",
            "POLICY_PATH": str(tmp_path / "policy.yaml"),
            "WRITE_TOKEN_KEY": Fernet.generate_key().decode(),
            "ORCID_API_URL": "https://api.orcid.org/v3.0",
            "ORCID_CLIENT_ID": CLIENT_ID,
            "ORCID_CLIENT_SECRET": "secret",
            "STEWARD_ORCIDS": STEWARD,
        }
    )
    record = Record()
    app = create_app(settings, orcid_reader=record)
    gk = app.extensions["gatekeeper"]
    gk.issuer.writer = Writer(record)
    app.record = record
    return app


def signed_in(app, orcid=RESEARCHER):
    client = app.test_client()
    sid = secrets.token_urlsafe(16)
    app.extensions["gatekeeper"].store.put_session(sid, session_record(orcid, None), 3600)
    with client.session_transaction() as session:
        session["researcher"] = {"orcid": orcid, "name": "R", "sid": sid, "amr": []}
        session["csrf"] = "csrf-for-tests"
    client.sid = sid
    return client


EARN = "/earn/agreed/dua"
ACCEPT = {"csrf": "csrf-for-tests", "accept": "yes", "version": "1"}


def state_of(response) -> str:
    return parse_qs(urlsplit(response.headers["Location"]).query)["state"][0]


def token_answer(orcid=RESEARCHER, scope="/activities/update /read-limited", token="WRITE-TOKEN"):
    return {
        "access_token": token,
        "token_type": "bearer",
        "refresh_token": "refresh",
        "expires_in": 631138518,
        "scope": scope,
        "name": "R",
        "orcid": orcid,
    }


class TestEarnCsrfAndAuthorization:
    def test_accept_without_csrf_is_400_and_asks_nothing_of_orcid(self, web):
        client = signed_in(web)
        response = client.post(EARN, data={"accept": "yes", "version": "1"})
        assert response.status_code == 400
        with client.session_transaction() as session:
            assert "earn" not in session

    def test_accept_with_another_sessions_csrf_is_400(self, web):
        client = signed_in(web)
        response = client.post(EARN, data={**ACCEPT, "csrf": "not-this-sessions"})
        assert response.status_code == 400

    def test_accepting_old_terms_is_refused(self, web):
        client = signed_in(web)
        response = client.post(EARN, data={**ACCEPT, "version": "0"})
        assert response.status_code == 400

    def test_past_the_limit_an_address_asks_orcid_for_no_more_permissions(self, web):
        # Each trip keeps a state in Redis for ten minutes; a client that keeps its old
        # cookie prunes none, so the count of trips per address is what bounds them.
        gk = web.extensions["gatekeeper"]
        gk.settings = dataclasses.replace(gk.settings, sign_ins_per_minute=3)
        client = signed_in(web)
        for _ in range(3):
            assert client.post(EARN, data=ACCEPT).status_code == 302
        with client.session_transaction() as session:
            pending = dict(session["earn"])
        refused = client.post(EARN, data=ACCEPT)
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "60"
        assert "Nothing was written" in refused.get_data(as_text=True)
        with client.session_transaction() as session:
            assert session["earn"] == pending  # no new state
        assert client.get("/login").status_code == 429  # one count with sign-ins
        other = signed_in(web)
        response = other.post(EARN, data=ACCEPT, environ_base={"REMOTE_ADDR": "192.0.2.9"})
        assert response.status_code == 302

    @pytest.mark.parametrize(
        "failure, title",
        [
            (requests.ConnectionError("refused"), "ORCID is not answering"),
            (MalformedResponse("no discovery document"), "ORCID gave an answer we could not read"),
        ],
    )
    def test_orcid_unreadable_before_the_trip_is_a_502_page(self, web, monkeypatch, failure, title):
        # With openid, the trip to ORCID first reads its discovery document.
        from app.web import earning

        def fails(**kwargs):
            raise failure

        monkeypatch.setattr(earning, "redirect_to_orcid", fails)
        response = signed_in(web).post(EARN, data=ACCEPT)
        assert response.status_code == 502
        assert "Nothing was written" in response.get_data(as_text=True)
        assert title in response.get_data(as_text=True)

    def test_a_qualification_the_dataset_does_not_need_is_404(self, web):
        client = signed_in(web)
        assert client.post("/earn/agreed/induction", data=ACCEPT).status_code == 404

    @pytest.mark.parametrize("path", ["/steward/issue", "/steward/withdraw"])
    def test_steward_writes_need_a_steward(self, web, path):
        client = signed_in(web, RESEARCHER)
        kept(web.extensions["gatekeeper"].write_tokens, OTHER)
        form = {
            "csrf": "csrf-for-tests",
            "orcid": OTHER,
            "dataset": "inducted",
            "qualification": "induction",
        }
        assert client.post(path, data=form).status_code == 403
        assert web.extensions["gatekeeper"].issuer.writer.calls == []

    @pytest.mark.parametrize("path", ["/steward/issue", "/steward/withdraw"])
    def test_steward_writes_need_the_csrf_token(self, web, path):
        client = signed_in(web, STEWARD)
        kept(web.extensions["gatekeeper"].write_tokens, OTHER)
        form = {"orcid": OTHER, "dataset": "inducted", "qualification": "induction"}
        assert client.post(path, data=form).status_code == 400
        assert client.post(path, data={**form, "csrf": "wrong"}).status_code == 400
        assert web.extensions["gatekeeper"].issuer.writer.calls == []

    def test_a_signed_out_steward_post_writes_nothing(self, web):
        client = web.test_client()
        form = {"orcid": OTHER, "dataset": "inducted", "qualification": "induction"}
        assert client.post("/steward/issue", data=form).status_code == 403

    def test_a_steward_cannot_accept_terms_for_a_researcher(self, web):
        client = signed_in(web, STEWARD)
        kept(web.extensions["gatekeeper"].write_tokens, OTHER)
        form = {
            "csrf": "csrf-for-tests",
            "orcid": OTHER,
            "dataset": "agreed",
            "qualification": "dua",
        }
        assert client.post("/steward/issue", data=form).status_code == 400
        assert web.extensions["gatekeeper"].issuer.writer.calls == []


class TestEarnCallback:
    @responses.activate
    def test_consent_for_another_record_keeps_nothing(self, web):
        responses.post(TOKEN_URL, json=token_answer(orcid=OTHER))
        responses.post(REVOKE_URL, status=200)
        client = signed_in(web)
        state = state_of(client.post(EARN, data=ACCEPT))
        response = client.get(f"/callback?code=c&state={state}")
        assert response.status_code == 400
        tokens = web.extensions["gatekeeper"].write_tokens
        assert tokens.get(RESEARCHER) is None and tokens.get(OTHER) is None
        assert web.extensions["gatekeeper"].issuer.writer.calls == []

    @responses.activate
    def test_a_token_we_refuse_to_keep_is_revoked_at_orcid(self, web):
        responses.post(TOKEN_URL, json=token_answer(orcid=OTHER))
        responses.post(REVOKE_URL, status=200)
        client = signed_in(web)
        state = state_of(client.post(EARN, data=ACCEPT))
        client.get(f"/callback?code=c&state={state}")
        assert any(call.request.url == REVOKE_URL for call in responses.calls)

    @pytest.mark.parametrize(
        "answer",
        [
            {"body": "<html>Down for maintenance</html>", "content_type": "text/html"},
            {"json": []},
            {"json": {**token_answer(), "expires_in": "soon"}},
            {
                "body": json.dumps({**token_answer(), "expires_in": 1}).replace(
                    '"expires_in": 1', '"expires_in": 1e400'
                ),
                "content_type": "application/json",
            },
            {"json": {**token_answer(), "access_token": ["WRITE-TOKEN"]}},
        ],
        ids=[
            "html-page",
            "json-list",
            "expires-in-not-a-number",
            "expires-in-past-any-clock",
            "access-token-a-list",
        ],
    )
    @responses.activate
    def test_a_token_answer_that_is_no_token_writes_nothing(self, web, answer):
        responses.post(TOKEN_URL, status=200, **answer)
        client = signed_in(web)
        state = state_of(client.post(EARN, data=ACCEPT))
        response = client.get(f"/callback?code=c&state={state}")
        assert response.status_code == 502
        assert "could not read" in response.get_data(as_text=True)
        assert web.extensions["gatekeeper"].write_tokens.get(RESEARCHER) is None
        assert web.extensions["gatekeeper"].issuer.writer.calls == []

    @responses.activate
    def test_an_earn_callback_cannot_be_replayed(self, web):
        responses.post(TOKEN_URL, json=token_answer())
        client = signed_in(web)
        state = state_of(client.post(EARN, data=ACCEPT))
        first = client.get(f"/callback?code=c&state={state}")
        assert first.status_code == 302 and "/earned" in first.headers["Location"]
        assert len(web.record.items[RESEARCHER]) == 1
        again = client.get(f"/callback?code=c&state={state}")
        assert again.status_code == 400  # spent: a sign-in with a spent state
        assert len(web.record.items[RESEARCHER]) == 1
        assert len([c for c in responses.calls if c.request.url == TOKEN_URL]) == 1

    @responses.activate
    def test_a_sign_in_state_does_not_end_an_earn_flow(self, web):
        """A /login state arriving while an earn waits is a sign-in, never a write."""
        responses.post(TOKEN_URL, json=token_answer(scope="/authenticate", token="SIGN-IN"))
        client = signed_in(web)
        client.post(EARN, data=ACCEPT)
        login_state = state_of(client.get("/login"))
        client.get(f"/callback?code=c&state={login_state}")
        assert web.extensions["gatekeeper"].write_tokens.get(RESEARCHER) is None
        assert web.extensions["gatekeeper"].issuer.writer.calls == []

    @responses.activate
    def test_deny_with_a_foreign_state_is_not_taken_as_an_earn(self, web):
        client = signed_in(web)
        client.post(EARN, data=ACCEPT)
        response = client.get("/callback?error=access_denied&state=forged")
        assert response.status_code == 200
        with client.session_transaction() as session:
            assert "earn" in session  # the pending earn was not consumed

    @responses.activate
    def test_a_superseded_earn_state_is_not_taken_as_a_sign_in(self, web):
        responses.post(TOKEN_URL, json=token_answer())
        client = signed_in(web)
        first = state_of(client.post(EARN, data=ACCEPT))
        client.post(EARN, data=ACCEPT)  # a second tab, or Back and Accept again
        client.get(f"/callback?code=c&state={first}")
        store = web.extensions["gatekeeper"].store
        with client.session_transaction() as session:
            sid = session.get("researcher", {}).get("sid")
        assert sid == client.sid  # no new sign-in started from an earn consent
        record = store.get_session(sid, RESEARCHER) if sid else None
        assert "WRITE-TOKEN" not in repr(record)

    @responses.activate
    def test_an_earn_that_took_too_long_is_refused_before_any_token_exchange(self, web):
        responses.post(TOKEN_URL, json=token_answer())
        client = signed_in(web)
        state = state_of(client.post(EARN, data=ACCEPT))
        with client.session_transaction() as session:
            session["earn"] = {state: {**session["earn"][state], "accepted_at": time.time() - 3600}}
        response = client.get(f"/callback?code=c&state={state}")
        assert response.status_code == 400
        assert len(responses.calls) == 0
        assert web.extensions["gatekeeper"].issuer.writer.calls == []

    @responses.activate
    def test_terms_changed_while_at_orcid_writes_nothing(self, web, tmp_path):
        responses.post(TOKEN_URL, json=token_answer())
        client = signed_in(web)
        state = state_of(client.post(EARN, data=ACCEPT))
        with client.session_transaction() as session:
            session["earn"] = {state: {**session["earn"][state], "version": "0"}}
        response = client.get(f"/callback?code=c&state={state}")
        assert response.status_code == 409
        assert web.extensions["gatekeeper"].issuer.writer.calls == []

    @responses.activate
    def test_a_token_without_the_write_scope_is_not_kept(self, web):
        responses.post(TOKEN_URL, json=token_answer(scope="/read-limited"))
        client = signed_in(web)
        state = state_of(client.post(EARN, data=ACCEPT))
        assert client.get(f"/callback?code=c&state={state}").status_code == 400
        assert web.extensions["gatekeeper"].write_tokens.get(RESEARCHER) is None

    @responses.activate
    def test_the_kept_token_never_reaches_a_page_the_cookie_or_the_log(self, web, caplog):
        responses.post(TOKEN_URL, json=token_answer())
        client = signed_in(web)
        state = state_of(client.post(EARN, data=ACCEPT))
        caplog.set_level("DEBUG")
        done = client.get(f"/callback?code=c&state={state}", follow_redirects=True)
        assert done.status_code == 200
        assert "WRITE-TOKEN" not in done.get_data(as_text=True)
        with client.session_transaction() as session:
            assert "WRITE-TOKEN" not in repr(dict(session))
        assert "WRITE-TOKEN" not in caplog.text
        for entry in web.extensions["gatekeeper"].checker.decision_log.writes():
            assert "WRITE-TOKEN" not in repr(entry.to_dict())


class TestRedisDown:
    def test_accept_with_redis_down_is_503_not_500(self, web, monkeypatch):
        client = signed_in(web)
        tokens = web.extensions["gatekeeper"].write_tokens

        def down(*a, **k):
            raise redis.ConnectionError("down")

        monkeypatch.setattr(tokens, "get", down)
        response = client.post(EARN, data=ACCEPT)
        assert response.status_code == 503
        assert "Traceback" not in response.get_data(as_text=True)

    @responses.activate
    def test_keeping_the_token_with_redis_down_is_503_and_writes_nothing(self, web, monkeypatch):
        responses.post(TOKEN_URL, json=token_answer())
        client = signed_in(web)
        state = state_of(client.post(EARN, data=ACCEPT))
        tokens = web.extensions["gatekeeper"].write_tokens

        def down(*a, **k):
            raise redis.ConnectionError("down")

        monkeypatch.setattr(tokens, "put", down)
        response = client.get(f"/callback?code=c&state={state}")
        assert response.status_code == 503
        assert web.extensions["gatekeeper"].issuer.writer.calls == []

    def test_writing_with_redis_down_is_502_with_no_write(self, web, monkeypatch):
        client = signed_in(web)
        tokens = web.extensions["gatekeeper"].write_tokens
        kept(tokens, RESEARCHER)
        calls = {"n": 0}
        real_get = tokens.get

        def first_then_down(orcid):
            calls["n"] += 1
            if calls["n"] > 1:
                raise redis.ConnectionError("down")
            return real_get(orcid)

        monkeypatch.setattr(tokens, "get", first_then_down)
        response = client.post(EARN, data=ACCEPT)
        assert response.status_code == 502
        assert web.extensions["gatekeeper"].issuer.writer.calls == []

    def test_steward_withdraw_with_decisions_not_dropped_says_so(self, web, monkeypatch):
        gk = web.extensions["gatekeeper"]
        web.record.add(
            RESEARCHER,
            our_item(
                4010,
                RESEARCHER,
                title="Accepted the agreement",
                ext_value=f"dua-1-{RESEARCHER}",
                start="2026-01-10",
                end="2099-01-10",
            ),
        )
        kept(gk.write_tokens, RESEARCHER)
        assert gk.checker.check(RESEARCHER, "agreed").allowed  # cached
        monkeypatch.setattr(gk.issuer, "forget_decisions", lambda orcid: False)
        steward = signed_in(web, STEWARD)
        form = {
            "csrf": "csrf-for-tests",
            "orcid": RESEARCHER,
            "dataset": "agreed",
            "qualification": "dua",
        }
        response = steward.post("/steward/withdraw", data=form, follow_redirects=True)
        assert web.record.items[RESEARCHER] == []  # gone from ORCID
        still_allowed = gk.checker.check(RESEARCHER, "agreed").allowed
        page = response.get_data(as_text=True).lower()
        assert not still_allowed or "could not" in page


# --- the CLI's promised exit codes ---------------------------------------------------------


class TestCliExitCodes:
    @pytest.fixture
    def cli(self, tmp_path, monkeypatch):
        from click.testing import CliRunner

        import app.cli

        (tmp_path / "policy.yaml").write_text(policy_text("1"))
        record = Record()
        issuer, tokens, _log = make_issuer(record, Writer(record))
        monkeypatch.setattr(app.cli, "_issuer", lambda settings: issuer)
        env = {
            "POLICY_PATH": str(tmp_path / "policy.yaml"),
            "ORCID_CLIENT_ID": CLIENT_ID,
            "ORCID_CLIENT_SECRET": "secret",
        }

        def run(*args):
            return CliRunner().invoke(app.cli.main, list(args), env=env)

        run.record, run.tokens = record, tokens
        return run

    def test_issue_without_a_kept_token_exits_1(self, cli):
        result = cli("issue", "--orcid", RESEARCHER, "--qualification", "induction")
        assert result.exit_code == 1 and "has not allowed" in result.output

    def test_withdrawing_another_sources_item_exits_1(self, cli):
        cli.record.add(
            RESEARCHER,
            orcid_json.qualification(
                1001, owner=RESEARCHER, src=orcid_json.source(client_id=OTHER_CLIENT)
            ),
        )
        kept(cli.tokens, RESEARCHER)
        result = cli(
            "withdraw", "--orcid", RESEARCHER, "--qualification", "induction", "--put-code", "1001"
        )
        assert result.exit_code == 1
        assert "not added by this service" in result.output

    @pytest.mark.parametrize(
        "args",
        [
            ("issue", "--orcid", "0000-0002-1825-0098", "--qualification", "induction"),
            ("issue", "--orcid", RESEARCHER, "--qualification", "nope"),
            ("issue", "--orcid", RESEARCHER, "--qualification", "dua"),  # terms: not a steward's
            ("withdraw", "--orcid", RESEARCHER, "--qualification", "nope"),
        ],
        ids=["bad-checksum", "unknown", "terms", "withdraw-unknown"],
    )
    def test_misuse_exits_2(self, cli, args):
        assert cli(*args).exit_code == 2

    def test_a_put_code_that_cannot_be_is_misuse(self, cli):
        kept(cli.tokens, RESEARCHER)
        result = cli(
            "withdraw", "--orcid", RESEARCHER, "--qualification", "induction", "--put-code", "-1"
        )
        assert result.exit_code == 2


TWO_AGREEMENTS = """
version: 1
qualifications:
  dua-a:
    title: Accepted the data access agreement
    sources: [self-issued]
    issue:
      organization: {name: SAIL Databank, city: Swansea, country: GB, ror: 053fq8t95}
      external_id: {type: other-id, value: "dua-a-{version}-{orcid}"}
      valid_for_days: 365
      accept_terms: {url: https://example.org/a-terms, version: "1"}
  approved:
    title_pattern: data access
    sources: [self-issued]
    issue:
      title: Approved for data access by the DAC
      organization: {name: SAIL Databank, city: Swansea, country: GB, ror: 053fq8t95}
      external_id: {type: other-id, value: "dac-{orcid}"}
      valid_for_days: 365
      steward: true
datasets:
  a:
    paths: [/a/]
    require: [dua-a]
  b:
    paths: [/b/]
    require: [approved]
"""


class TestOneIssuedItemOpensOnlyItsOwnQualification:
    """Our items are told apart by the `self` external ID each rule writes, never by title."""

    def test_accepting_one_agreement_is_no_stewards_grant_of_another(self, tmp_path):
        (tmp_path / "policy.yaml").write_text(textwrap.dedent(TWO_AGREEMENTS).lstrip())
        policy = load_policy(tmp_path / "policy.yaml")
        record = Record()
        issuer, tokens, _ = make_issuer(record, Writer(record))
        kept(tokens, RESEARCHER)
        issuer.issue(RESEARCHER, policy.qualifications["dua-a"], by="researcher")
        assert allowed(policy, "a", record)
        # The item's title matches `approved`'s pattern too: it opened b before.
        assert not allowed(policy, "b", record)
        issuer.issue(RESEARCHER, policy.qualifications["approved"], by="steward ann")
        assert allowed(policy, "b", record)

    def test_our_item_naming_another_researcher_counts_for_nobody(self, policy_file):
        policy = policy_file("1")
        record = Record()
        record.add(
            RESEARCHER,
            our_item(4001, RESEARCHER, title="Accepted the agreement", ext_value=f"dua-1-{OTHER}"),
        )
        assert not allowed(policy, "agreed", record)

    def test_the_explanation_says_to_accept_the_current_terms(self, policy_file):
        from app.explain import explain_lines

        policy_file("1")
        new = policy_file("2")
        record = Record()
        record.add(
            RESEARCHER,
            our_item(
                4001, RESEARCHER, title="Accepted the agreement", ext_value=f"dua-1-{RESEARCHER}"
            ),
        )
        decision = decide(
            new,
            new.dataset("agreed"),
            record.read_qualifications(RESEARCHER),
            orcid=RESEARCHER,
            now=dt.datetime.combine(TODAY, dt.time(12), tzinfo=dt.UTC),
            own_client_id=CLIENT_ID,
        )
        text = "\n".join(explain_lines(new, decision))
        assert "for other terms (an earlier version, or another agreement)" in text
        assert "accept the current terms" in text


class TestNoWritePermissionOutlivesDisconnect:
    @responses.activate
    def test_a_disconnect_during_the_earn_exchange_keeps_no_permission(self, web, monkeypatch):
        from app.web import earning

        responses.post(TOKEN_URL, json=token_answer())
        responses.post(REVOKE_URL, status=200)
        client, other_tab = signed_in(web), signed_in(web)
        state = state_of(client.post(EARN, data=ACCEPT))
        real = earning.exchange_code

        def exchange_while_disconnecting(**kwargs):
            assert other_tab.post("/disconnect", data={"csrf": "csrf-for-tests"}).status_code
            return real(**kwargs)

        monkeypatch.setattr(earning, "exchange_code", exchange_while_disconnecting)
        response = client.get(f"/callback?code=c&state={state}")
        gk = web.extensions["gatekeeper"]
        assert response.status_code == 401
        assert gk.write_tokens.get(RESEARCHER) is None  # kept before: for twenty years
        assert gk.issuer.writer.calls == []
        revoked = [c.request.body for c in responses.calls if c.request.url == REVOKE_URL]
        assert any("WRITE-TOKEN" in (body or "") for body in revoked)

    @responses.activate
    def test_a_write_token_redis_cannot_delete_is_still_revoked_and_said(self, web, monkeypatch):
        responses.post(REVOKE_URL, status=200)
        client = signed_in(web)
        gk = web.extensions["gatekeeper"]
        kept(gk.write_tokens, RESEARCHER, "KEPT-WRITE-TOKEN")

        def down(*args, **kwargs):
            raise redis.ConnectionError("down")

        monkeypatch.setattr(gk.write_tokens, "delete", down)
        response = client.post("/disconnect", data={"csrf": "csrf-for-tests"})
        body = response.get_data(as_text=True)
        assert "could not delete the permission to add to your record" in body
        revoked = [c.request.body for c in responses.calls if c.request.url == REVOKE_URL]
        assert any("KEPT-WRITE-TOKEN" in (b or "") for b in revoked)


@responses.activate
def test_a_disconnect_no_replica_confirmed_still_finishes_and_says_so(web, monkeypatch):
    # The sessions are gone from the primary: a second try would find this browser
    # signed out and their ORCID tokens unknown. So it finishes, and says so.
    from app.cache import NotReplicated

    responses.post(REVOKE_URL, status=200)
    client = signed_in(web)
    store = web.extensions["gatekeeper"].store
    assert store.put_session("other", session_record(RESEARCHER, "ORCID-TOKEN-2"), 60)
    real = store.take_sessions_of

    def short(orcid):
        raise NotReplicated("no replica confirmed it", taken=real(orcid))

    monkeypatch.setattr(store, "take_sessions_of", short)
    response = client.post("/disconnect", data={"csrf": "csrf-for-tests"})
    assert response.status_code == 200
    assert "We could not confirm all of it just now" in response.get_data(as_text=True)
    revoked = [c.request.body for c in responses.calls if c.request.url == REVOKE_URL]
    assert any("ORCID-TOKEN-2" in (body or "") for body in revoked)
