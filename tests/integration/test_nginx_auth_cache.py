"""nginx's cache of `/auth` answers (docs/proxies/nginx.conf), on the real nginx.

The cache must pay for itself (repeated checks of a file are answered by nginx) and keep
every promise of the uncached check, as a client of nginx sees it: a sign-out, a token's
revocation, a steward's revocation or a policy edit is honoured within about a second,
and no cached answer ever turns a refusal or a signed-out request into an allow.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import shutil
import threading
import time

import pytest
import requests
from click.testing import CliRunner

from app.cli import main
from tests.integration.conftest import EMULATOR_CLIENT, REPO, Emulator
from tests.integration.proxies import FileServer, Sites
from tests.integration.test_access_tokens import make_token

QUALIFIED = "qualified"
QUALIFIED_ORCID = "0009-0000-0000-0017"
SELF_ASSERTED = "self-asserted"  # refused sail-cohort
SAIL_FILE = "/datasets/sail-cohort/chunk.bin"
SAIL_CONTENT = "a chunk of the SAIL cohort extract\n"
BOUND = 1.2  # seconds: "within about a second" of the change returning, as a client sees it
WATCH = 2.0  # seconds watched after a change
BROWSER_ACCEPT = "text/html,application/xhtml+xml,*/*;q=0.8"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    server = FileServer(tmp_path_factory.mktemp("files"))
    server.put(SAIL_FILE, SAIL_CONTENT)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def policies(tmp_path_factory):
    folder = tmp_path_factory.mktemp("policies")
    shutil.copytree(REPO / "policies", folder, dirs_exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def nginx(tmp_path_factory, emulator, redis_server, files, policies):
    sites = Sites(tmp_path_factory, emulator, redis_server, files, first_database=13)
    yield sites.get("nginx", POLICY_PATH=str(policies))
    sites.stop()


def auth_checks(site, at_least: int = 0) -> int:
    """How many checks the gatekeeper answered so far (the rest were nginx's cache), once
    gunicorn has written them: it writes each access line after sending the answer, so
    the count is read until it reaches ``at_least`` (within 10 s) and then holds for 0.2 s."""
    deadline, last = time.monotonic() + 10, None
    while True:
        count = sum(1 for _, path in site.gatekeeper_requests() if path.startswith("/auth"))
        if count == last and (count >= at_least or time.monotonic() > deadline):
            return count
        last = count
        time.sleep(0.2)


class Watcher:
    """Fetches the file through nginx in a loop, as a script reading chunks does, and
    records (sent, status) with times relative to ``mark()``."""

    def __init__(self, site, session=None, headers=None):
        self.site, self.session = site, session or requests.Session()
        self.headers = headers or {}
        self.answers: list[tuple[float, float, int]] = []
        self.since = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        deadline = time.monotonic() + 30  # bounded whatever the test does
        while not self._stop.is_set() and time.monotonic() < deadline:
            sent = time.monotonic()
            response = self.session.get(
                self.site.url + SAIL_FILE,
                headers=self.headers,
                allow_redirects=False,
                timeout=15,
            )
            self.answers.append((sent, time.monotonic(), response.status_code))
            time.sleep(0.01)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=20)

    def after(self, change_returned: float) -> list[tuple[float, int]]:
        """(seconds after the change returned, status) of answers received after it."""
        return [
            (round(answered - change_returned, 3), status)
            for sent, answered, status in self.answers
            if answered > change_returned
        ]


def assert_honoured(
    watcher: Watcher, change_returned: float, refusals: set[int], bound: float = BOUND
):
    """No allow answered more than ``bound`` after the change returned, and watched past it."""
    time.sleep(max(0.0, change_returned + bound + WATCH - BOUND - time.monotonic()))
    seen = watcher.after(change_returned)
    assert {status for _, status in seen} <= {200, *refusals}, seen
    allowed = [at for at, status in seen if status == 200]
    assert max(allowed, default=0) <= bound, f"allowed {max(allowed):.3f} s after: {seen}"
    assert any(at > bound for at, _ in seen), f"not watched long enough: {seen}"
    assert seen[-1][1] in refusals


def warm(watcher: Watcher):
    """Until the watcher has been allowed for a while (the cache holds the answer)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if len(watcher.answers) >= 10 and all(s == 200 for _, _, s in watcher.answers[-10:]):
            return
        time.sleep(0.05)
    raise AssertionError(f"never allowed steadily: {watcher.answers[-10:]}")


def form_token(session, url: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', session.get(url, timeout=10).text)[1]


class TestCaching:
    def test_repeated_checks_of_a_file_are_answered_by_nginx(self, nginx):
        browser = nginx.sign_in(QUALIFIED)
        assert nginx.get(SAIL_FILE, browser).status_code == 200
        before, started = auth_checks(nginx), time.monotonic()
        for _ in range(40):
            response = nginx.get(SAIL_FILE, browser)
            assert (response.status_code, response.text) == (200, SAIL_CONTENT)
        seconds = time.monotonic() - started
        # At most one check per second reaches the gatekeeper (one more at each tick).
        assert auth_checks(nginx) - before <= int(seconds) + 2, seconds

    def test_a_signed_out_request_never_gets_a_cached_allow(self, nginx):
        browser = nginx.sign_in(QUALIFIED)
        assert nginx.get(SAIL_FILE, browser).status_code == 200
        response = nginx.get(SAIL_FILE)  # no cookie: another key
        assert response.status_code == 302 and "/login" in response.headers["Location"]
        forged = nginx.get(SAIL_FILE, headers={"Cookie": "gatekeeper_session=forged"})
        assert forged.status_code == 302

    def test_another_researcher_on_the_same_file_is_refused(self, nginx):
        allowed, refused = nginx.sign_in(QUALIFIED), nginx.sign_in(SELF_ASSERTED)
        assert nginx.get(SAIL_FILE, allowed).status_code == 200
        assert nginx.get(SAIL_FILE, refused).status_code == 403
        assert nginx.get(SAIL_FILE, allowed).status_code == 200

    def test_a_browsers_refusal_and_a_scripts_are_kept_apart(self, nginx):
        refused = nginx.sign_in(SELF_ASSERTED)
        browser = nginx.get(SAIL_FILE, refused, headers={"Accept": BROWSER_ACCEPT})
        assert browser.status_code == 303
        assert browser.headers["Location"] == "/datasets/sail-cohort"
        script = nginx.get(SAIL_FILE, refused, headers={"Accept": "*/*"})
        assert script.status_code == 403

    def test_a_failed_token_is_never_cached(self, nginx):
        before = auth_checks(nginx)
        for _ in range(3):
            response = nginx.get(SAIL_FILE, headers={"Authorization": "Bearer gkpat_nonsense"})
            assert response.status_code == 401
        # Each one asked (the check, then the sign-in location's 401): nothing cached.
        assert auth_checks(nginx, at_least=before + 6) - before == 6


class TestOneSecondBounds:
    def test_sign_out(self, nginx):
        browser = nginx.sign_in(QUALIFIED)
        watched = requests.Session()
        watched.cookies.update(browser.cookies)
        with Watcher(nginx, watched) as watcher:
            warm(watcher)
            csrf = form_token(browser, f"{nginx.url}/logout")
            response = browser.post(f"{nginx.url}/logout", data={"csrf": csrf}, timeout=10)
            assert response.status_code == 200
            assert_honoured(watcher, time.monotonic(), {302})

    def test_a_stewards_revocation_of_sessions(self, nginx, redis_server):
        browser = nginx.sign_in(QUALIFIED)
        with Watcher(nginx, browser) as watcher:
            warm(watcher)
            url = f"{redis_server.url.rsplit('/', 1)[0]}/13"  # the site's database
            result = CliRunner().invoke(
                main, ["sessions", "revoke", "--orcid", QUALIFIED_ORCID], env={"REDIS_URL": url}
            )
            assert result.exit_code == 0, result.output
            assert_honoured(watcher, time.monotonic(), {302})

    def test_a_token_revoked_on_the_page(self, nginx):
        browser = nginx.sign_in(QUALIFIED)
        token = make_token(nginx.url, browser, f"watched {time.monotonic()}")
        with Watcher(nginx, headers={"Authorization": f"Bearer {token}"}) as watcher:
            warm(watcher)
            page = browser.get(f"{nginx.url}/tokens", timeout=10).text
            ids = re.findall(r"/tokens/([0-9a-f]+)/revoke", page)
            csrf = form_token(browser, f"{nginx.url}/tokens")
            for token_id in ids:
                response = browser.post(
                    f"{nginx.url}/tokens/{token_id}/revoke", data={"csrf": csrf}, timeout=10
                )
                assert response.status_code == 200
            assert_honoured(watcher, time.monotonic(), {401})

    def test_a_policy_edit_that_refuses_the_dataset(self, nginx, policies):
        browser = nginx.sign_in(QUALIFIED)
        datasets = policies / "datasets.yaml"
        before = datasets.read_text()
        rule = "require: [safe-researcher, {any_of: [gcp, hsr]}]"
        assert rule in before, "policies/datasets.yaml changed: update this test's edit"
        try:
            with Watcher(nginx, browser, headers={"Accept": "*/*"}) as watcher:
                warm(watcher)
                staged = policies / "datasets.yaml.new"  # not *.yaml: never read half-written
                staged.write_text(before.replace(rule, "require: [safe-researcher, sail-dua]"))
                staged.replace(datasets)
                assert_honoured(watcher, time.monotonic(), {403})
        finally:
            staged = policies / "datasets.yaml.new"
            staged.write_text(before)
            staged.replace(datasets)

        def every_worker_allows() -> bool:
            # Straight to gunicorn, past nginx's cache, each on a new connection (any
            # worker): one allow through nginx shows only one worker has reloaded.
            return all(
                requests.get(
                    f"{nginx.gatekeeper.url}/auth",
                    cookies=browser.cookies,
                    headers={"X-Original-URI": SAIL_FILE},
                    allow_redirects=False,
                    timeout=5,
                ).status_code
                == 200
                for _ in range(10)
            )

        deadline = time.monotonic() + 5
        while not every_worker_allows():
            assert time.monotonic() < deadline, "the old policy did not come back"
            time.sleep(0.1)


@pytest.fixture
def own_orcid():
    """An emulator of this test's own, whose records the test changes as ORCID would."""
    from app.emulator import create_app
    from app.emulator.server import serve_in_thread

    app = create_app(clients=[EMULATOR_CLIENT])
    base_url, shutdown = serve_in_thread(app)
    yield app, Emulator(base_url)
    shutdown()


class TestQualificationExpiry:
    """A qualification that ends: ORCID's record (an emulator of this module's own) now
    shows the training ended yesterday. The decision behind the cached answers lasts
    DECISION_TTL; no cached answer outlives it by more than about a second."""

    DECISION_TTL = 2

    def test_the_file_stops_within_the_decisions_bound(
        self, tmp_path_factory, own_orcid, redis_server, files
    ):
        from app.emulator.personas import PartialDate
        from app.emulator.state import EXTENSION

        app, emulator = own_orcid
        sites = Sites(tmp_path_factory, emulator, redis_server, files, first_database=14)
        try:
            site = sites.get("nginx", DECISION_TTL=str(self.DECISION_TTL))
            browser = site.sign_in(QUALIFIED)
            with Watcher(site, browser, headers={"Accept": "*/*"}) as watcher:
                warm(watcher)
                records = app.extensions[EXTENSION].records
                training = records.item(QUALIFIED_ORCID, 1001)  # Safe Researcher Training
                yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
                records.replace(
                    QUALIFIED_ORCID,
                    dataclasses.replace(
                        training,
                        start=PartialDate.of(yesterday - dt.timedelta(days=400)),
                        end=PartialDate.of(yesterday),
                    ),
                )
                assert_honoured(watcher, time.monotonic(), {403}, bound=self.DECISION_TTL + BOUND)
        finally:
            sites.stop()
