"""Issuing, end to end: a researcher earns the SAIL agreement on the dataset page, we write
it to the (emulated) ORCID record, and the dataset opens as self-issued; a steward issues
and withdraws from the command line.

Real parts: gunicorn with two workers, a real redis-server, the project's ORCID emulator
with a member client (its writes validate as ORCID's do). Every check of access is an
``/auth`` request, as a reverse proxy makes it.
"""

from __future__ import annotations

import re
import subprocess
import time

import pytest
import requests
import yaml
from cryptography.fernet import Fernet

from tests.integration.conftest import BIN, REPO, Gatekeeper, free_port, gatekeeper_env

CLIENT = {
    "client_id": "APP-GATEKEEPERDEMO01",  # the client the personas' self-issued items name
    "client_secret": "member-secret",
    "name": "Gatekeeper (member)",
    "redirect_uris": "any-loopback",
    "member": True,
}
QUALIFIED = "0009-0000-0000-0017"  # safe-researcher from UKDS; default visibility private here
SELF_ISSUED = "0009-0000-0000-005X"  # safe-researcher written by our client; public default
EMPTY = "0009-0000-0000-0113"
DATASET = "sail-linked"  # requires safe-researcher and sail-dua
KEY = Fernet.generate_key().decode()


class Orcid:
    def __init__(self, url: str):
        self.url = url

    def items(self, orcid: str, token: str | None = None) -> list[dict]:
        """The record's qualification summaries, as the emulator's member API shows them."""
        headers = {"Accept": "application/vnd.orcid+json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        body = requests.get(
            f"{self.url}/v3.0/{orcid}/qualifications", headers=headers, timeout=5
        ).json()
        return [
            summary["qualification-summary"]
            for group in body["affiliation-group"]
            for summary in group["summaries"]
        ]

    def ours(self, orcid: str) -> list[dict]:
        """Our items, read as the researcher's own client would see them (a fresh token)."""
        return [
            item
            for item in self.items(orcid, self.read_token(orcid))
            if (item["source"].get("source-client-id") or {}).get("path") == CLIENT["client_id"]
            and item["role-title"] == "Accepted the SAIL data access agreement"
        ]

    def read_token(self, orcid: str) -> str:
        persona = next(p["key"] for p in self.personas() if p["orcid"] == orcid)
        response = requests.get(
            f"{self.url}/oauth/authorize",
            params={
                "client_id": CLIENT["client_id"],
                "response_type": "code",
                "scope": "/read-limited",
                "redirect_uri": "http://127.0.0.1:1/cb",
                "persona": persona,
                "decision": "authorize",
            },
            allow_redirects=False,
            timeout=5,
        )
        code = re.search(r"code=([^&]+)", response.headers["Location"])[1]
        token = requests.post(
            f"{self.url}/oauth/token",
            data={
                "client_id": CLIENT["client_id"],
                "client_secret": CLIENT["client_secret"],
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": "http://127.0.0.1:1/cb",
            },
            timeout=5,
        ).json()
        return token["access_token"]

    def personas(self) -> list[dict]:
        return requests.get(f"{self.url}/_emulator/personas", timeout=5).json()

    def revoke(self, orcid: str):
        requests.post(f"{self.url}/_emulator/revoke", json={"orcid": orcid}, timeout=5)


@pytest.fixture(scope="module")
def member_orcid(tmp_path_factory):
    """An emulator of its own: a member client, and one persona whose new items are private."""
    from app.emulator import create_app
    from app.emulator.server import serve_in_thread

    fixtures = yaml.safe_load((REPO / "app/emulator/fixtures/personas.yaml").read_text())
    for persona in fixtures["personas"]:
        if persona["key"] == "qualified":
            persona["default_visibility"] = "private"
    path = tmp_path_factory.mktemp("orcid") / "personas.yaml"
    path.write_text(yaml.safe_dump(fixtures))
    url, shutdown = serve_in_thread(create_app(path, clients=[CLIENT]))
    yield Orcid(url.rstrip("/"))
    shutdown()


@pytest.fixture(scope="module")
def service(member_orcid, redis_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("earning")
    port = free_port()
    env = gatekeeper_env(
        tmp,
        member_orcid,
        redis_server.url,
        f"http://127.0.0.1:{port}",
        ORCID_CLIENT_ID=CLIENT["client_id"],
        ORCID_CLIENT_SECRET=CLIENT["client_secret"],
        WRITE_TOKEN_KEY=KEY,
        STEWARD_ORCIDS=EMPTY,
    )
    server = Gatekeeper(env, port)
    server.env = env
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def clean(redis_server, member_orcid, request):
    redis_server.client.flushall()
    requests.post(f"{member_orcid.url}/_emulator/reset", timeout=5).raise_for_status()


def persona_key(orcid_emulator: Orcid, orcid: str) -> str:
    return next(p["key"] for p in orcid_emulator.personas() if p["orcid"] == orcid)


def sign_in(service, orcid_emulator, orcid) -> requests.Session:
    from tests.integration.conftest import sign_in as walk

    browser, response = walk(service.url, persona_key(orcid_emulator, orcid))
    assert response.status_code == 302, response.text
    return browser


def auth(service, browser, dataset=DATASET) -> int:
    return requests.get(
        f"{service.url}/auth",
        params={"dataset": dataset},
        cookies=browser.cookies,
        allow_redirects=False,
        timeout=15,
    ).status_code


def settles_on(service, browser, status: int, seconds: float = 1.2) -> bool:
    """Whether every /auth from ``seconds`` on answers ``status`` (a worker trusts its
    memo of an answer for up to a second; both workers, many requests)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        auth(service, browser)  # whatever a worker's memo still says, within the bound
        time.sleep(0.05)
    return all(auth(service, browser) == status for _ in range(20))


def earn(service, browser, persona: str, decision: str = "authorize", accept: bool = True):
    """Accept the terms on our page, answer ORCID's consent, follow back: the last response."""
    page = f"{service.url}/earn/{DATASET}/sail-dua"
    form = browser.get(page, timeout=10)
    assert form.status_code == 200, form.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)[1]
    data = {"csrf": csrf, "version": "2026-1"}
    if accept:
        data["accept"] = "yes"
    response = browser.post(page, data=data, allow_redirects=False, timeout=10)
    if response.status_code != 302 or "/oauth/authorize" not in response.headers["Location"]:
        return response  # written at once with a kept token, or refused
    authorize = response.headers["Location"]
    assert "activities%2Fupdate" in authorize or "activities/update" in authorize
    response = browser.get(
        authorize,
        params={"persona": persona, "decision": decision},
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code in (302, 303), response.text
    return browser.get(response.headers["Location"], allow_redirects=False, timeout=15)


def gatekeeper_cli(service, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "gatekeeper"), *args],
        env=service.env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


class TestEarnIt:
    def test_the_dataset_page_offers_it_and_first_sign_in_asks_only_to_read(
        self, service, member_orcid
    ):
        browser = requests.Session()
        login = browser.get(f"{service.url}/login", allow_redirects=False, timeout=10)
        assert "activities" not in login.headers["Location"]  # never at first sign-in
        browser = sign_in(service, member_orcid, SELF_ISSUED)
        page = browser.get(f"{service.url}/datasets/{DATASET}", timeout=10).text
        assert "Earn it here" in page
        terms = browser.get(f"{service.url}/earn/{DATASET}/sail-dua", timeout=10).text
        assert "https://example.org/sail/data-access-agreement" in terms
        assert f"sail-dua-2026-1-{SELF_ISSUED}" in terms  # what will be written
        assert "SAIL Databank" in terms
        assert auth(service, browser) == 403

    def test_earning_writes_one_item_by_us_and_the_dataset_opens_as_self_issued(
        self, service, member_orcid
    ):
        browser = sign_in(service, member_orcid, SELF_ISSUED)
        assert auth(service, browser) == 403
        response = earn(service, browser, persona_key(member_orcid, SELF_ISSUED))
        assert response.status_code == 302, response.text
        done = browser.get(service.url + response.headers["Location"], timeout=15)
        assert "Added to your ORCID record" in done.text
        assert "<strong>public</strong>" in done.text
        assert "Access granted" in done.text
        assert settles_on(service, browser, 200)  # the cached refusal was dropped
        ours = member_orcid.ours(SELF_ISSUED)
        assert len(ours) == 1
        assert ours[0]["visibility"] == "public"
        explained = gatekeeper_cli(service, "explain", "--orcid", SELF_ISSUED, "--dataset", DATASET)
        assert "self-issued" in explained.stdout or "this service" in explained.stdout

        # Writing twice leaves one item: the second time renews ours (a kept token, no
        # second consent at ORCID).
        again = earn(service, browser, persona_key(member_orcid, SELF_ISSUED))
        assert again.status_code == 302
        assert "/earned" in again.headers["Location"]
        renewed = browser.get(service.url + again.headers["Location"], timeout=15).text
        assert "Renewed on your ORCID record" in renewed
        assert len(member_orcid.ours(SELF_ISSUED)) == 1

        # The decision log has one entry per write.
        writes = gatekeeper_cli(service, "decisions", "writes", "--orcid", SELF_ISSUED)
        assert writes.returncode == 0, writes.stderr
        assert [line.split()[1] for line in writes.stdout.splitlines()] == [
            "renewed",
            "issued",
        ]

    def test_a_private_item_still_counts_here_and_the_page_says_what_that_means(
        self, service, member_orcid
    ):
        browser = sign_in(service, member_orcid, QUALIFIED)
        response = earn(service, browser, persona_key(member_orcid, QUALIFIED))
        done = browser.get(service.url + response.headers["Location"], timeout=15).text
        assert "<strong>only me</strong>" in done
        assert "No other service can count it" in done
        # Read with the researcher's /read-limited token, which sees our private item.
        assert settles_on(service, browser, 200)
        assert member_orcid.items(QUALIFIED) and not any(
            item["role-title"].startswith("Accepted the SAIL")
            for item in member_orcid.items(QUALIFIED)
        )  # the public view does not show it

    def test_deny_at_the_second_consent_writes_nothing_and_keeps_the_session(
        self, service, member_orcid
    ):
        browser = sign_in(service, member_orcid, SELF_ISSUED)
        response = earn(service, browser, persona_key(member_orcid, SELF_ISSUED), "deny")
        assert response.status_code == 200
        assert "Nothing was added to your ORCID record" in response.text
        assert member_orcid.ours(SELF_ISSUED) == []
        assert auth(service, browser, "survey-microdata") == 200  # still signed in
        assert auth(service, browser) == 403

    def test_terms_not_accepted_is_refused_and_nothing_is_asked_of_orcid(
        self, service, member_orcid
    ):
        browser = sign_in(service, member_orcid, SELF_ISSUED)
        response = earn(service, browser, "self-issued", accept=False)
        assert response.status_code == 400
        assert "accept the terms" in response.text
        assert member_orcid.ours(SELF_ISSUED) == []

    def test_consent_given_for_another_record_writes_nothing(self, service, member_orcid):
        browser = sign_in(service, member_orcid, SELF_ISSUED)
        response = earn(service, browser, persona_key(member_orcid, QUALIFIED))
        assert response.status_code == 400
        assert "different ORCID record" in response.text
        assert member_orcid.ours(SELF_ISSUED) == [] and member_orcid.ours(QUALIFIED) == []

    def test_the_kept_token_is_encrypted_in_redis(self, service, member_orcid, redis_server):
        browser = sign_in(service, member_orcid, SELF_ISSUED)
        earn(service, browser, persona_key(member_orcid, SELF_ISSUED))
        raw = redis_server.client.get(f"gk:{{{SELF_ISSUED}}}:wt")
        assert raw is not None
        text = raw.decode() if isinstance(raw, bytes) else raw
        assert "activities" not in text and "access_token" not in text
        assert Fernet(KEY).decrypt(text.encode())  # ours, sealed with WRITE_TOKEN_KEY


class TestSteward:
    def test_withdrawal_ends_access_at_the_next_auth(self, service, member_orcid):
        browser = sign_in(service, member_orcid, SELF_ISSUED)
        earn(service, browser, persona_key(member_orcid, SELF_ISSUED))
        assert settles_on(service, browser, 200)
        result = gatekeeper_cli(
            service, "withdraw", "--orcid", SELF_ISSUED, "--qualification", "sail-dua"
        )
        assert result.returncode == 0, result.stderr
        assert "withdrew sail-dua" in result.stdout
        assert settles_on(service, browser, 403)
        assert member_orcid.ours(SELF_ISSUED) == []

    def test_a_steward_issues_a_steward_granted_qualification_with_the_kept_token(
        self, service, member_orcid
    ):
        browser = sign_in(service, member_orcid, SELF_ISSUED)
        earn(service, browser, persona_key(member_orcid, SELF_ISSUED))
        result = gatekeeper_cli(
            service, "issue", "--orcid", SELF_ISSUED, "--qualification", "induction", "--by", "ann"
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("issued induction")
        titles = [i["role-title"] for i in member_orcid.items(SELF_ISSUED)]
        assert "Completed the in-house data induction" in titles
        writes = gatekeeper_cli(service, "decisions", "writes", "--orcid", SELF_ISSUED).stdout
        assert "steward ann" in writes

    def test_without_a_kept_token_issue_exits_1_with_a_clear_message(self, service):
        result = gatekeeper_cli(service, "issue", "--orcid", EMPTY, "--qualification", "induction")
        assert result.returncode == 1
        assert "has not allowed this service" in result.stderr
        assert "Traceback" not in result.stderr

    def test_a_steward_cannot_accept_terms_for_a_researcher(self, service):
        result = gatekeeper_cli(service, "issue", "--orcid", EMPTY, "--qualification", "sail-dua")
        assert result.returncode == 2
        assert "accepting terms" in result.stderr

    def test_withdrawing_an_item_another_source_added_is_orcid_s_9010_and_exits_1(
        self, service, member_orcid
    ):
        browser = sign_in(service, member_orcid, QUALIFIED)
        earn(service, browser, persona_key(member_orcid, QUALIFIED))
        result = gatekeeper_cli(
            service,
            "withdraw",
            "--orcid",
            QUALIFIED,
            "--qualification",
            "sail-dua",
            "--put-code",
            "1001",  # UK Data Service's safe-researcher item
        )
        assert result.returncode == 1
        assert "not added by this service" in result.stderr
        assert any(i["put-code"] == 1001 for i in member_orcid.items(QUALIFIED))

    def test_a_token_orcid_revoked_is_forgotten_and_issue_exits_1(
        self, service, member_orcid, redis_server
    ):
        browser = sign_in(service, member_orcid, SELF_ISSUED)
        earn(service, browser, persona_key(member_orcid, SELF_ISSUED))
        member_orcid.revoke(SELF_ISSUED)
        result = gatekeeper_cli(
            service, "issue", "--orcid", SELF_ISSUED, "--qualification", "induction"
        )
        assert result.returncode == 1
        assert "has not allowed this service" in result.stderr
        assert redis_server.client.get(f"gk:{{{SELF_ISSUED}}}:wt") is None


class TestStewardConsole:
    def test_a_steward_withdraws_from_the_console_and_access_ends(self, service, member_orcid):
        researcher = sign_in(service, member_orcid, SELF_ISSUED)
        earn(service, researcher, persona_key(member_orcid, SELF_ISSUED))
        assert settles_on(service, researcher, 200)
        steward = sign_in(service, member_orcid, EMPTY)
        page = steward.get(f"{service.url}/steward/{DATASET}", timeout=10).text
        assert "Qualifications this service issues" in page
        assert "issued sail-dua" in page  # the write is in the log the console shows
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)[1]
        response = steward.post(
            f"{service.url}/steward/withdraw",
            data={
                "csrf": csrf,
                "orcid": SELF_ISSUED,
                "dataset": DATASET,
                "qualification": "sail-dua",
            },
            allow_redirects=False,
            timeout=15,
        )
        assert response.status_code == 303
        assert settles_on(service, researcher, 403)
        assert member_orcid.ours(SELF_ISSUED) == []
        page = steward.get(f"{service.url}/steward/{DATASET}", timeout=10).text
        assert "withdrawn sail-dua" in page


def test_disconnect_deletes_and_revokes_the_kept_write_token(service, member_orcid, redis_server):
    browser = sign_in(service, member_orcid, SELF_ISSUED)
    earn(service, browser, persona_key(member_orcid, SELF_ISSUED))
    assert redis_server.client.get(f"gk:{{{SELF_ISSUED}}}:wt") is not None
    page = browser.get(f"{service.url}/disconnect", timeout=10).text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)[1]
    done = browser.post(f"{service.url}/disconnect", data={"csrf": csrf}, timeout=15).text
    assert "permission to add to your record is gone too" in done
    assert redis_server.client.get(f"gk:{{{SELF_ISSUED}}}:wt") is None
    result = gatekeeper_cli(
        service, "issue", "--orcid", SELF_ISSUED, "--qualification", "induction"
    )
    assert result.returncode == 1  # nothing kept to write with
