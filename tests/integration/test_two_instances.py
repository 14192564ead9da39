"""Two gatekeepers (two gunicorn masters, two workers each) behind one nginx share one Redis.

The instances share SECRET_KEY, REDIS_URL and a policy directory; nginx serves the
reference deployment's config (docs/deploy/nginx.conf, made from the tested
docs/proxies/nginx.conf) with both as the servers of its upstream, as Docker's DNS gives
it two replicas. A researcher signs in on one and is checked by the other; a logout, a
revocation or a policy edit on one is honoured by both within about a second, for every
check either instance answers. Every check goes on a connection of its own, so that each
worker of an instance takes some.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from tests.integration.conftest import (
    BIN,
    REPO,
    Gatekeeper,
    RedisServer,
    free_port,
    gatekeeper_env,
    sign_in,
)
from tests.integration.proxies import NGINX, FileServer, Nginx, render

DEPLOY = REPO / "docs" / "deploy"

# Personas of the ORCID emulator (app/emulator/fixtures/personas.yaml) under policies/:
QUALIFIED = "qualified"  # may open sail-cohort
QUALIFIED_ORCID = "0009-0000-0000-0017"
SELF_ASSERTED = "self-asserted"  # may not
SAIL_FILE = "/datasets/sail-cohort/hello.txt"
SAIL_CONTENT = "hello from the SAIL cohort extract\n"
# What the docs' nginx sends to /auth: the cookie, Accept and the URL it will serve.
CHECK_HEADERS = {"X-Original-URI": SAIL_FILE, "Accept": "*/*", "Connection": "close"}

BOUND = 1.2  # seconds: "within about a second" of the change returning, as a client sees it
WATCH = 2.0  # seconds each instance is watched after a change: the bound, and no 200 after
TIMEOUT = 5  # seconds any one request may take


class DeployNginx(Nginx):
    """nginx serving docs/deploy/nginx.conf, with the given gatekeepers as its upstream."""

    def __init__(self, tmp: Path, port: int, gatekeeper_ports: list[int], files_port: int):
        super().__init__(tmp, port, gatekeeper_ports[0], files_port)
        self.gatekeeper_ports = gatekeeper_ports

    def command(self):
        command = super().command()  # the wrapper nginx.conf that includes the site below
        servers = ";\n    server ".join(f"127.0.0.1:{port}" for port in self.gatekeeper_ports)
        (self.tmp / "gatekeeper.conf").write_text(
            render(
                DEPLOY / "nginx.conf",
                {
                    "listen 8080;": f"listen 127.0.0.1:{self.port};",
                    "server gatekeeper:8000;": f"server {servers};",
                    "server datasets:80;": f"server {self.files};",
                    "access_log /dev/stdout": f"access_log {self.access_log}",
                    "/var/cache/nginx/orcid-gatekeeper": str(self.tmp / "auth-cache"),
                },
            )
        )
        return command


@dataclass(frozen=True, slots=True)
class Answer:
    instance: str
    sent: float  # seconds after the change returned
    answered: float
    status: int


class Deployment:
    """The two gatekeepers, the nginx in front of them, and their shared policy folder."""

    def __init__(self, tmp_path_factory, emulator, redis_url: str, files: FileServer):
        self.policies = tmp_path_factory.mktemp("policies")
        shutil.copytree(REPO / "policies", self.policies, dirs_exist_ok=True)
        self.nginx_port = free_port()
        public_url = f"http://127.0.0.1:{self.nginx_port}"
        self.instances: dict[str, Gatekeeper] = {}
        self.nginx: DeployNginx | None = None
        try:
            for name in ("A", "B"):
                env = gatekeeper_env(
                    tmp_path_factory.mktemp(f"gatekeeper-{name}"),
                    emulator,
                    redis_url,
                    public_url,
                    POLICY_PATH=str(self.policies),
                )
                self.instances[name] = Gatekeeper(env, free_port(), workers=2)
                self.env = env  # the settings a steward's command runs with
            self.nginx = DeployNginx(
                tmp_path_factory.mktemp("nginx"),
                self.nginx_port,
                [gatekeeper.port for gatekeeper in self.instances.values()],
                files.port,
            )
            self.nginx.start()
        except BaseException:
            self.stop()
            raise
        self.url = self.nginx.url

    def stop(self):
        if self.nginx is not None:
            self.nginx.stop()
        for gatekeeper in self.instances.values():
            gatekeeper.stop()

    def check(self, name: str, cookies: dict) -> requests.Response:
        """One /auth on instance ``name`` as nginx's auth_request makes it."""
        return requests.get(
            f"{self.instances[name].url}/auth",
            headers=CHECK_HEADERS,
            cookies=cookies,
            allow_redirects=False,
            timeout=TIMEOUT,
        )

    def statuses(self, name: str, cookies: dict, times: int) -> list[int]:
        return [self.check(name, cookies).status_code for _ in range(times)]

    def watch(self, cookies: dict, since: float, seconds: float = WATCH) -> list[Answer]:
        """Checks on A and B in turn until ``seconds`` after ``since`` (monotonic)."""
        answers = []
        while time.monotonic() - since < seconds:
            for name in self.instances:
                sent = time.monotonic() - since
                status = self.check(name, cookies).status_code
                answers.append(Answer(name, sent, time.monotonic() - since, status))
        return answers

    def cli(self, *args: str) -> str:
        """A `gatekeeper` command run as a steward would, with the instances' settings."""
        result = subprocess.run(
            [str(BIN / "gatekeeper"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def auth_checks(self, name: str) -> dict[str, float]:
        """Instance ``name``'s count of /auth answers by outcome, from its /metrics."""
        text = requests.get(f"{self.instances[name].url}/metrics", timeout=TIMEOUT).text
        found = re.findall(r'^gatekeeper_auth_checks_total\{outcome="(\w+)"\} (\S+)$', text, re.M)
        return {outcome: float(count) for outcome, count in found}


def assert_honoured(answers: list[Answer], refusal: int):
    """No check on either instance was allowed more than BOUND after the change returned.

    NOTE: not "never allowed after its first refusal": each worker rechecks a remembered
    answer once it is a second old, so while one worker of an instance already refuses,
    the other may allow until its own second is up.
    """
    for name in ("A", "B"):
        mine = [answer for answer in answers if answer.instance == name]
        shown = [(round(a.answered, 3), a.status) for a in mine]
        assert {answer.status for answer in mine} <= {200, refusal}, shown
        allowed = [answer.answered for answer in mine if answer.status == 200]
        assert max(allowed, default=0) <= BOUND, f"{name} allowed {max(allowed):.3f} s after"
        assert any(answer.sent > BOUND for answer in mine), f"{name} was not watched: {shown}"


def sign_in_at(gatekeeper: Gatekeeper, persona: str) -> requests.Session:
    """Sign in with every step on this one instance.

    ORCID sends the browser to PUBLIC_URL's /callback, which is nginx's (either instance):
    the walk takes the same path and query to this instance instead.
    """
    browser = requests.Session()
    response = browser.get(f"{gatekeeper.url}/login", allow_redirects=False, timeout=TIMEOUT)
    assert response.status_code == 302, response.text
    response = browser.get(
        response.headers["Location"],
        params={"persona": persona, "decision": "authorize"},
        allow_redirects=False,
        timeout=TIMEOUT,
    )
    callback = urlsplit(response.headers["Location"])
    assert callback.path == "/callback", response.headers["Location"]
    response = browser.get(
        f"{gatekeeper.url}/callback?{callback.query}", allow_redirects=False, timeout=TIMEOUT
    )
    assert response.status_code == 302, response.text
    return browser


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    server = FileServer(tmp_path_factory.mktemp("files"))
    server.put(SAIL_FILE, SAIL_CONTENT)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory):
    """A redis-server of this module's own, which no other module's test stops."""
    server = RedisServer(tmp_path_factory.mktemp("redis-two-instances"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def started(tmp_path_factory, emulator, shared_redis, files):
    deployment = Deployment(tmp_path_factory, emulator, shared_redis.url, files)
    yield deployment
    deployment.stop()


@pytest.fixture
def deployment(started, shared_redis, orcid, files):
    """The deployment with an empty Redis (no session, decision or refusal carried over)."""
    shared_redis.client.flushall()
    files.seen.clear()
    return started


@pytest.fixture
def signed_in(deployment) -> tuple[requests.Session, dict]:
    """A qualified researcher signed in on A, allowed by every worker of both instances."""
    browser = sign_in_at(deployment.instances["A"], QUALIFIED)
    cookies = dict(browser.cookies)
    for name in deployment.instances:
        assert deployment.statuses(name, cookies, 10) == [200] * 10
    return browser, cookies


def log_out(browser: requests.Session, gatekeeper: Gatekeeper):
    page = browser.get(f"{gatekeeper.url}/logout", timeout=TIMEOUT).text
    token = re.search(r'name="csrf" value="([^"]+)"', page)[1]
    response = browser.post(f"{gatekeeper.url}/logout", data={"csrf": token}, timeout=TIMEOUT)
    assert response.status_code == 200, response.text


class TestOneSignInTwoInstances:
    def test_a_sign_in_on_one_instance_is_allowed_by_the_other_with_the_same_decision(
        self, deployment, orcid
    ):
        cookies = dict(sign_in_at(deployment.instances["A"], QUALIFIED).cookies)
        on_a = deployment.check("A", cookies)
        assert on_a.status_code == 200
        for _ in range(10):
            on_b = deployment.check("B", cookies)
            assert on_b.status_code == 200
            for header in ("X-Orcid-Id", "X-Auth-Request-User", "X-Auth-Request-Dataset"):
                assert on_b.headers[header] == on_a.headers[header]
        # B served A's decision from the shared store: ORCID was read once, for A.
        assert orcid.requests()["qualifications"] == 1

    def test_a_refusal_on_one_instance_is_the_others_refusal(self, deployment, orcid):
        cookies = dict(sign_in_at(deployment.instances["A"], SELF_ASSERTED).cookies)
        assert deployment.statuses("A", cookies, 1) == [403]
        assert deployment.statuses("B", cookies, 10) == [403] * 10
        assert orcid.requests()["qualifications"] == 1


class TestChangesOnOneAreHonouredByBoth:
    def test_a_logout_on_one_instance_is_honoured_by_both_within_a_second(
        self, deployment, signed_in
    ):
        browser, cookies = signed_in
        log_out(browser, deployment.instances["A"])
        assert_honoured(deployment.watch(cookies, time.monotonic()), 401)

    def test_sessions_revoke_is_honoured_by_both_within_a_second(self, deployment, signed_in):
        _, cookies = signed_in
        orcid_id = deployment.check("B", cookies).headers["X-Orcid-Id"]
        output = deployment.cli("sessions", "revoke", "--orcid", orcid_id)
        returned = time.monotonic()
        assert output == f"ended 1 session of {orcid_id}\n"
        assert_honoured(deployment.watch(cookies, returned), 401)

    def test_decisions_revoke_is_honoured_by_both_within_a_second(
        self, deployment, signed_in, orcid
    ):
        _, cookies = signed_in
        orcid_id = deployment.check("B", cookies).headers["X-Orcid-Id"]
        # From now on a fresh decision cannot read the record, and refuses: only a
        # decision that is still cached allows.
        orcid.faults(status=500, endpoints=["qualifications"])
        assert (
            deployment.statuses("A", cookies, 5) + deployment.statuses("B", cookies, 5)
            == [200] * 10
        )
        output = deployment.cli("decisions", "revoke", "--orcid", orcid_id)
        returned = time.monotonic()
        assert output.startswith("revoked ") and output.endswith(f" for {orcid_id}\n")
        assert_honoured(deployment.watch(cookies, returned), 403)
        assert orcid.requests()["qualifications"] >= 2  # decided afresh: asked, and failed


def replace_policy_file(path: Path, text: str):
    """Swap a policy file's content at once, as an editor's save or a deploy would."""
    staged = path.with_name(path.name + ".new")  # not *.yaml: no reload reads it
    staged.write_text(text)
    staged.replace(path)


@pytest.fixture
def tightened(deployment, signed_in):
    """A policy edit that refuses sail-cohort to the qualified persona; undone afterwards.

    Yields the monotonic time the edit was made.
    """
    _, cookies = signed_in
    datasets = deployment.policies / "datasets.yaml"
    before = datasets.read_text()
    rule = "require: [safe-researcher, {any_of: [gcp, hsr]}]"
    assert rule in before, "policies/datasets.yaml changed: update this test's edit"
    # sail-dua is earned on the dataset page: nobody in the emulator has it yet.
    replace_policy_file(datasets, before.replace(rule, "require: [safe-researcher, sail-dua]"))
    yield time.monotonic()
    replace_policy_file(datasets, before)
    # Every worker of both back on the old policy before the next test: ten allowed
    # checks in a row on each instance (a worker yet to reload refuses once more).
    deadline = time.monotonic() + 10
    for name in deployment.instances:
        while deployment.statuses(name, cookies, 10) != [200] * 10:
            assert time.monotonic() < deadline, f"{name} did not take the old policy back"
            time.sleep(0.2)


class TestPolicyEdits:
    """Each worker looks at the policy files at most once a second, on a request."""

    def test_a_policy_edit_is_honoured_by_both_within_a_second(
        self, deployment, signed_in, tightened
    ):
        _, cookies = signed_in
        assert_honoured(deployment.watch(cookies, tightened), 403)

    def test_an_instance_idle_since_a_policy_edit_refuses_its_first_check(
        self, deployment, signed_in, tightened
    ):
        _, cookies = signed_in
        # No request since the edit: its watcher sees it within 1.25 s, then reloads.
        time.sleep(max(0.0, tightened + 2.0 - time.monotonic()))
        assert deployment.statuses("B", cookies, 4) == [403] * 4


class TestThroughNginx:
    def test_round_robin_checks_all_get_the_right_answer_from_both_instances(
        self, deployment, files
    ):
        before = {name: deployment.auth_checks(name) for name in deployment.instances}
        # Sign-in through nginx: /login and /callback may reach different instances.
        qualified, response = sign_in(deployment.url, QUALIFIED, SAIL_FILE)
        assert response.status_code == 302, response.text
        refused, response = sign_in(deployment.url, SELF_ASSERTED, SAIL_FILE)
        assert response.status_code == 302, response.text
        # Ten of a kind in a row: nginx takes the upstream's servers in turn, request by
        # request (a 401 costs two checks: the check, then the sign-in redirect's).
        # A query of its own for each: nginx's auth cache would answer repeats itself.
        for n in range(10):
            response = qualified.get(f"{deployment.url}{SAIL_FILE}?n={n}", timeout=TIMEOUT)
            assert (response.status_code, response.text) == (200, SAIL_CONTENT)
        for n in range(10):
            response = refused.get(f"{deployment.url}{SAIL_FILE}?n={n}", timeout=TIMEOUT)
            assert response.status_code == 403
        for _ in range(10):
            response = requests.get(
                deployment.url + SAIL_FILE, allow_redirects=False, timeout=TIMEOUT
            )
            assert response.status_code == 302
            assert urlsplit(response.headers["Location"]).path == "/login"
        assert len(files.seen) == 10  # only the allowed requests reached the files
        assert {headers["X-Orcid-Id"] for _, headers in files.seen} == {QUALIFIED_ORCID}
        after = {name: deployment.auth_checks(name) for name in deployment.instances}
        answered = {
            name: {
                outcome: after[name].get(outcome, 0) - before[name].get(outcome, 0)
                for outcome in ("allow", "deny")
            }
            for name in deployment.instances
        }
        for outcome in ("allow", "deny"):
            assert sum(each[outcome] for each in answered.values()) == 10, answered
            assert all(each[outcome] >= 3 for each in answered.values()), answered


def test_the_deployment_nginx_config_passes_nginx_t(tmp_path):
    """docs/deploy/nginx.conf, with compose's names as loopback addresses, on the real nginx."""
    nginx = DeployNginx(tmp_path, free_port(), [free_port(), free_port()], free_port())
    result = subprocess.run(
        [*nginx.command(), "-t"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, f"{NGINX} -t:\n{result.stdout}{result.stderr}"
    said = result.stderr + (tmp_path / "nginx.log").read_text()
    assert "test is successful" in said, said
