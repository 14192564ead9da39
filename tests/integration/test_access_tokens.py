"""Personal access tokens on real servers: curl, wget and rclone through each real proxy,
and the bounds (revocation, expiry, the researcher's decision) on several gunicorn workers
and instances sharing one redis-server.

Tokens are made as a researcher makes them, on the Tokens page behind the proxy; the
tools are Debian's, run as a script on a compute node would run them.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from app.access_tokens import TokenHasher, TokenRecord, new_token
from app.cache import RedisStore
from app.cli import main
from tests.integration.conftest import REPO, sign_in
from tests.integration.proxies import PROXIES, FileServer, Sites

QUALIFIED = "qualified"  # may open sail-cohort and survey-microdata
QUALIFIED_ORCID = "0009-0000-0000-0017"
SELF_ASSERTED = "self-asserted"  # refused sail-cohort
SAIL_FILE = "/datasets/sail-cohort/hello.txt"
SAIL_CONTENT = "hello from the SAIL cohort extract\n"
SURVEY_FILE = "/datasets/survey-microdata/hello.txt"
SURVEY_CONTENT = "hello from the household survey\n"
BATCH = {"a.csv": "id,value\n1,2\n", "b.csv": "id,value\n3,4\n"}
TOOL_TIMEOUT = 30  # seconds for one curl, wget or rclone run


def make_token(base_url: str, browser, name: str = "script", datasets=(), days: int = 90) -> str:
    """A token made on the Tokens page, as a researcher makes one; the token it shows."""
    page = browser.get(f"{base_url}/tokens", timeout=10)
    assert page.status_code == 200, page.text[:500]
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
    form = {"csrf": csrf, "name": name, "days": str(days)}
    if datasets:
        form.update(scope="chosen", dataset=list(datasets))
    response = browser.post(f"{base_url}/tokens", data=form, allow_redirects=False, timeout=10)
    assert response.status_code == 201, response.text[:500]
    return re.search(r'value="(gkpat_[0-9A-Za-z]+)"', response.text)[1]


def run(command: list[str], tmp: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp), "RCLONE_CONFIG": str(tmp / "rclone.conf")}
    return subprocess.run(
        command, capture_output=True, text=True, timeout=TOOL_TIMEOUT, env=env, cwd=tmp
    )


def curl_status(url: str, *options: str, tmp: Path) -> tuple[int, dict[str, str]]:
    """Status and headers of one curl request (no redirect followed)."""
    result = run(["curl", "-sS", "-o", "/dev/null", "-D", "-", *options, url], tmp)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    server = FileServer(tmp_path_factory.mktemp("files"))
    server.put(SAIL_FILE, SAIL_CONTENT)
    server.put(SURVEY_FILE, SURVEY_CONTENT)
    for name, content in BATCH.items():
        server.put(f"/datasets/sail-cohort/batch/{name}", content)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sites(tmp_path_factory, emulator, redis_server, files):
    # Databases of their own: test_proxies.py's sites take 1 to 8.
    started = Sites(tmp_path_factory, emulator, redis_server, files, first_database=9)
    yield started
    started.stop()


class Scripted:
    """A site, and tokens its researchers made there: every dataset, survey only, refused."""

    def __init__(self, site):
        self.site, self.url = site, site.url
        browser = site.sign_in(QUALIFIED)
        self.token = make_token(site.url, browser, "every dataset")
        self.survey_only = make_token(site.url, browser, "survey only", ["survey-microdata"])
        self.refused = make_token(site.url, site.sign_in(SELF_ASSERTED), "refused researcher")


@pytest.fixture(scope="module")
def scripted_sites(sites):
    return {}


@pytest.fixture(scope="module", params=list(PROXIES))
def scripted(request, sites, scripted_sites):
    if request.param not in scripted_sites:
        scripted_sites[request.param] = Scripted(sites.get(request.param))
    return scripted_sites[request.param]


@pytest.fixture
def tool(scripted, tmp_path):
    """The site, its file server's memory cleared, and a folder to run tools in."""
    scripted.site.files.seen.clear()
    scripted.tmp = tmp_path
    return scripted


def assert_reached_as_the_researcher(site, count: int):
    """``count`` requests reached the file server, with the identity and without the token."""
    assert len(site.files.seen) == count, [path for path, _ in site.files.seen]
    for path, headers in site.files.seen:
        assert headers.get_all("Authorization") is None, path
        assert headers.get_all("X-Orcid-Id") == [QUALIFIED_ORCID], path
        assert headers.get_all("X-Auth-Request-Dataset") == ["sail-cohort"], path


class TestThroughEachProxy:
    def test_curl_downloads_with_bearer_and_with_basic(self, tool):
        url = tool.url + SAIL_FILE
        for auth in (["-H", f"Authorization: Bearer {tool.token}"], ["-u", f"me:{tool.token}"]):
            result = run(["curl", "-sS", "-f", *auth, url], tool.tmp)
            assert result.returncode == 0, result.stderr + tool.site.explain(requests.get(url))
            assert result.stdout == SAIL_CONTENT
        assert_reached_as_the_researcher(tool.site, 2)

    def test_wget_downloads_with_bearer_and_with_basic(self, tool):
        url = tool.url + SAIL_FILE
        for auth in (
            [f"--header=Authorization: Bearer {tool.token}"],
            ["--auth-no-challenge", "--user=me", f"--password={tool.token}"],
        ):
            result = run(["wget", "-q", "-O", "-", *auth, url], tool.tmp)
            assert result.returncode == 0, result.stderr
            assert result.stdout == SAIL_CONTENT
        assert_reached_as_the_researcher(tool.site, 2)

    def test_rclone_copies_a_folder_with_bearer_and_with_basic(self, tool):
        basic = base64.b64encode(f"me:{tool.token}".encode()).decode()
        for scheme, credentials in (
            ("bearer", f"Bearer {tool.token}"),
            ("basic", f"Basic {basic}"),
        ):
            target = tool.tmp / scheme
            result = run(
                [
                    "rclone",
                    "copy",
                    "--http-url",
                    f"{tool.url}/datasets/sail-cohort/batch/",
                    "--http-headers",
                    f"Authorization,{credentials}",
                    ":http:",
                    str(target),
                ],
                tool.tmp,
            )
            assert result.returncode == 0, result.stderr
            assert {p.name: p.read_text() for p in target.iterdir()} == BATCH
        # The listing and each file (HEAD and GET), each checked and passed on.
        assert tool.site.files.seen
        assert_reached_as_the_researcher(tool.site, len(tool.site.files.seen))

    def test_a_token_opens_only_its_own_datasets(self, tool):
        status, _ = curl_status(
            tool.url + SAIL_FILE, "-H", f"Authorization: Bearer {tool.survey_only}", tmp=tool.tmp
        )
        assert status == 403
        assert tool.site.files.seen == []
        result = run(
            ["curl", "-sS", "-f", "-u", f"x:{tool.survey_only}", tool.url + SURVEY_FILE], tool.tmp
        )
        assert result.returncode == 0 and result.stdout == SURVEY_CONTENT, result.stderr

    def test_a_token_never_opens_what_its_researcher_is_refused(self, tool):
        status, _ = curl_status(
            tool.url + SAIL_FILE, "-H", f"Authorization: Bearer {tool.refused}", tmp=tool.tmp
        )
        assert status == 403
        assert tool.site.files.seen == []

    @pytest.mark.parametrize("kind", ["unknown", "mistyped", "basic-unknown", "not-a-token"])
    def test_a_bad_token_is_401_with_a_challenge_never_a_redirect(self, tool, kind):
        mistyped = tool.token[:-1] + ("a" if tool.token[-1] != "a" else "b")
        options = {
            "unknown": ["-H", f"Authorization: Bearer {new_token()}"],
            "mistyped": ["-H", f"Authorization: Bearer {mistyped}"],
            "basic-unknown": ["-u", f"me:{new_token()}"],
            "not-a-token": ["-H", "Authorization: Bearer hunter2"],
        }[kind]
        status, headers = curl_status(tool.url + SAIL_FILE, *options, tmp=tool.tmp)
        assert status == 401, headers
        assert "location" not in headers
        scheme = "Basic" if kind == "basic-unknown" else "Bearer"
        assert headers["www-authenticate"].startswith(f'{scheme} realm="orcid-gatekeeper"')
        assert tool.site.files.seen == []

    def test_a_browser_without_a_token_is_still_sent_to_sign_in(self, tool):
        status, headers = curl_status(tool.url + SAIL_FILE, tmp=tool.tmp)
        assert status in (302, 303) and "/login" in headers["location"]


# --- bounds on several workers and instances --------------------------------------------


@pytest.fixture
def two_instances(start_gatekeeper, redis_url, orcid):
    """Two gatekeepers (two workers each) sharing one Redis and one SECRET_KEY."""
    return [start_gatekeeper(redis_url=redis_url, workers=2) for _ in range(2)]


def fresh_checks(gatekeepers, token: str, path: str = SAIL_FILE, times: int = 6) -> list[int]:
    """``/auth`` on a new connection each time, on each instance, so every worker answers."""
    statuses = []
    for gatekeeper in gatekeepers:
        for _ in range(times):
            response = requests.get(
                f"{gatekeeper.url}/auth",
                headers={
                    "X-Original-URI": path,
                    "Authorization": f"Bearer {token}",
                    "Connection": "close",
                },
                allow_redirects=False,
                timeout=15,
            )
            statuses.append(response.status_code)
    return statuses


def form_token(browser, url: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', browser.get(url, timeout=10).text)[1]


class TestRevocation:
    def test_revoked_on_the_page_it_is_refused_everywhere_within_a_second(self, two_instances):
        first = two_instances[0]
        browser, _ = sign_in(first.url, QUALIFIED)
        token = make_token(first.url, browser)
        kept = make_token(first.url, browser, "kept")
        assert fresh_checks(two_instances, token) == [200] * 12
        page = browser.get(f"{first.url}/tokens", timeout=10).text
        ids = re.findall(r"/tokens/([0-9a-f]+)/revoke", page)
        assert len(ids) == 2
        # The one listed first is the older: "script".
        response = browser.post(
            f"{first.url}/tokens/{ids[0]}/revoke",
            data={"csrf": form_token(browser, f"{first.url}/tokens")},
            timeout=10,
        )
        assert response.status_code == 200 and "is revoked" in response.text
        time.sleep(1.1)
        assert fresh_checks(two_instances, token) == [401] * 12
        assert fresh_checks(two_instances, kept) == [200] * 12

    def test_a_steward_revokes_by_name_from_the_command_line(self, two_instances, redis_url):
        first = two_instances[0]
        browser, _ = sign_in(first.url, QUALIFIED)
        laptop, cluster = (
            make_token(first.url, browser, "laptop"),
            make_token(first.url, browser, "cluster"),
        )
        assert fresh_checks(two_instances, laptop) == [200] * 12
        env = {"REDIS_URL": redis_url}
        listed = CliRunner().invoke(main, ["tokens", "list", "--orcid", QUALIFIED_ORCID], env=env)
        assert listed.exit_code == 0, listed.output
        assert "'laptop' opens every dataset" in listed.output and "gkpat_" not in listed.output
        # Ending the sessions leaves the scripts running, and says so.
        ended = CliRunner().invoke(
            main, ["sessions", "revoke", "--orcid", QUALIFIED_ORCID], env=env
        )
        assert ended.exit_code == 0, ended.output
        assert ended.output.splitlines()[1] == (
            f"2 personal access tokens still work: gatekeeper tokens revoke --orcid "
            f"{QUALIFIED_ORCID}"
        )
        result = CliRunner().invoke(
            main,
            [
                "tokens",
                "revoke",
                "--orcid",
                f"https://orcid.org/{QUALIFIED_ORCID}",
                "--name",
                "laptop",
            ],
            env=env,
        )
        assert result.exit_code == 0, result.output
        assert result.output == f"revoked 1 token named 'laptop' of {QUALIFIED_ORCID}\n"
        time.sleep(1.1)
        assert fresh_checks(two_instances, laptop) == [401] * 12
        assert fresh_checks(two_instances, cluster) == [200] * 12
        result = CliRunner().invoke(main, ["tokens", "revoke", "--orcid", QUALIFIED_ORCID], env=env)
        assert result.output == f"revoked 1 token of {QUALIFIED_ORCID}\n"
        time.sleep(1.1)
        assert fresh_checks(two_instances, cluster) == [401] * 12

    def test_the_command_line_refuses_misuse_and_says_when_redis_is_down(self):
        bad = CliRunner().invoke(main, ["tokens", "revoke", "--orcid", "0000-0002-1825-0096"])
        assert bad.exit_code == 2
        unset = CliRunner().invoke(
            main, ["tokens", "revoke", "--orcid", QUALIFIED_ORCID], env={"REDIS_URL": ""}
        )
        assert unset.exit_code == 2 and "REDIS_URL" in unset.output
        down = CliRunner().invoke(
            main,
            ["tokens", "revoke", "--orcid", QUALIFIED_ORCID],
            env={"REDIS_URL": "redis://127.0.0.1:1/0"},
        )
        assert down.exit_code == 1 and "Redis did not confirm it" in down.output

    def test_sign_out_everywhere_revokes_every_token_everywhere(self, two_instances):
        first = two_instances[0]
        browser, _ = sign_in(first.url, QUALIFIED)
        tokens = [make_token(first.url, browser, name) for name in ("a", "b")]
        for token in tokens:
            assert fresh_checks(two_instances, token) == [200] * 12
        response = browser.post(
            f"{first.url}/logout/everywhere",
            data={"csrf": form_token(browser, f"{first.url}/")},
            timeout=10,
        )
        assert (
            response.status_code == 200 and "2 personal access tokens are revoked" in response.text
        )
        time.sleep(1.1)
        for token in tokens:
            assert fresh_checks(two_instances, token) == [401] * 12


class TestExpiry:
    def test_a_token_past_its_expiry_is_refused_by_every_worker(self, two_instances, redis_url):
        # Made as the page makes it, but lasting two seconds (the page's least is a day);
        # Redis keeps the record longer, so the token's own expiry is what refuses it.
        browser, _ = sign_in(two_instances[0].url, QUALIFIED)
        make_token(two_instances[0].url, browser)  # the researcher has a decision cached
        token = new_token()
        hasher = TokenHasher("integration-test-secret-key-0123456789")  # gatekeeper_env's
        now = time.time()
        record = TokenRecord(QUALIFIED_ORCID, "short", None, now, now + 2)
        store = RedisStore.from_url(redis_url)
        assert store.put_token(hasher.digest(token), QUALIFIED_ORCID, record.to_json(), 60)
        assert fresh_checks(two_instances, token) == [200] * 12
        time.sleep(max(0.0, now + 2.1 - time.time()))
        assert fresh_checks(two_instances, token) == [401] * 12

    def test_a_token_follows_a_policy_edit_that_refuses_the_dataset(
        self, start_gatekeeper, redis_url, orcid, tmp_path
    ):
        """The researcher's decision changes (here by the steward's edit): the token is
        refused by every worker within about a second, as the browser is."""
        policies = tmp_path / "policies"
        shutil.copytree(REPO / "policies", policies)
        gatekeeper = start_gatekeeper(redis_url=redis_url, workers=2, POLICY_PATH=str(policies))
        browser, _ = sign_in(gatekeeper.url, QUALIFIED)
        token = make_token(gatekeeper.url, browser)
        assert fresh_checks([gatekeeper], token, times=10) == [200] * 10
        datasets = policies / "datasets.yaml"
        rule = "require: [safe-researcher, {any_of: [gcp, hsr]}]"
        text = datasets.read_text()
        assert rule in text, "policies/datasets.yaml changed: update this test's edit"
        staged = policies / "datasets.yaml.new"  # not *.yaml: no reload reads it half-written
        staged.write_text(text.replace(rule, "require: [safe-researcher, sail-dua]"))
        staged.replace(datasets)
        # Each worker sees an edit within 1.25 s and reloads off the request path
        # (tests/integration/test_two_instances.py holds the one-second bound itself).
        deadline = time.monotonic() + 5
        while fresh_checks([gatekeeper], token, times=10) != [403] * 10:
            assert time.monotonic() < deadline, "the token still opens the dataset"
            time.sleep(0.2)
        response = browser.get(
            f"{gatekeeper.url}/auth", headers={"X-Original-URI": SAIL_FILE}, timeout=15
        )
        assert response.status_code == 403
