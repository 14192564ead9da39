"""`gatekeeper demo` as a newcomer runs it: one command, one URL, files behind the check."""

import os
import re
import signal
import subprocess

import pytest
import requests

from tests.integration.conftest import BIN, REPO, free_port, sign_in, wait_until


@pytest.fixture(scope="module")
def demo():
    port, orcid_port = free_port(), free_port()
    process = subprocess.Popen(
        [str(BIN / "gatekeeper"), "demo", "--port", str(port), "--orcid-port", str(orcid_port)],
        cwd=REPO,
        # A demo that does not stop dumps its threads' stacks on SIGABRT (see below).
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: requests.get(f"{url}/healthz", timeout=1).ok, what="demo")
    yield url, process
    if process.poll() is None:
        process.kill()
        process.wait()


class TestDemo:
    def test_a_protected_file_asks_for_sign_in(self, demo):
        url, _ = demo
        response = requests.get(
            f"{url}/datasets/sail-cohort/README.txt", allow_redirects=False, timeout=5
        )
        assert response.status_code == 302
        assert response.headers["Location"] == "/login?next=/datasets/sail-cohort/README.txt"

    def test_a_qualified_persona_gets_the_file_with_identity_headers(self, demo):
        url, _ = demo
        browser, response = sign_in(url, "qualified", "/datasets/sail-cohort/README.txt")
        assert response.headers["Location"] == "/datasets/sail-cohort/README.txt"
        file = browser.get(f"{url}/datasets/sail-cohort/README.txt", timeout=10)
        assert file.status_code == 200 and "SAIL cohort extract (demo)" in file.text
        assert file.headers["X-Auth-Request-Dataset"] == "sail-cohort"

    def test_a_refused_persona_gets_403_and_the_page_says_why(self, demo):
        url, _ = demo
        browser, _ = sign_in(url, "expired")
        assert browser.get(f"{url}/datasets/sail-cohort/README.txt", timeout=10).status_code == 403
        page = browser.get(f"{url}/datasets/sail-cohort", timeout=10).text
        assert "expired on" in page
        assert 'href="mailto:data-steward@example.org"' in page  # the demo's steward

    def test_demo_files_and_refusals_carry_the_pages_security_headers(self, demo):
        url, _ = demo
        browser, _ = sign_in(url, "expired")
        refused = browser.get(f"{url}/datasets/sail-cohort/README.txt", timeout=10)
        assert refused.status_code == 403
        assert "frame-ancestors 'none'" in refused.headers["Content-Security-Policy"]
        assert refused.headers["X-Content-Type-Options"] == "nosniff"

    def test_a_script_downloads_with_a_token_made_on_the_tokens_page(self, demo):
        url, _ = demo
        browser, _ = sign_in(url, "qualified")
        page = browser.get(f"{url}/tokens", timeout=10)
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
        made = browser.post(
            f"{url}/tokens", data={"csrf": csrf, "name": "demo script", "days": "7"}, timeout=10
        )
        assert made.status_code == 201
        token = re.search(r'value="(gkpat_[0-9A-Za-z]+)"', made.text)[1]
        file = requests.get(
            f"{url}/datasets/sail-cohort/README.txt",
            headers={"Authorization": f"Bearer {token}"},
            allow_redirects=False,
            timeout=10,
        )
        assert file.status_code == 200 and "SAIL cohort extract (demo)" in file.text
        mistyped = token[:-1] + ("x" if token[-1] != "x" else "y")
        wrong = requests.get(
            f"{url}/datasets/sail-cohort/README.txt",
            headers={"Authorization": f"Bearer {mistyped}"},
            allow_redirects=False,
            timeout=10,
        )
        assert wrong.status_code == 401 and "WWW-Authenticate" in wrong.headers

    def test_a_qualified_researcher_reads_their_passport_decoded_and_raw(self, demo):
        url, _ = demo
        browser, _ = sign_in(url, "qualified")
        assert "GA4GH Passport" in browser.get(f"{url}/", timeout=10).text
        page = browser.get(f"{url}/ga4gh/passport", headers={"Accept": "text/html"}, timeout=30)
        assert page.status_code == 200
        assert "ControlledAccessGrants" in page.text
        assert f"{url}/datasets/sail-cohort/" in page.text
        raw = browser.get(f"{url}/ga4gh/passport?format=json", timeout=30).json()
        assert raw["ga4gh_passport_v1"] and all(
            visa.count(".") == 2 for visa in raw["ga4gh_passport_v1"]
        )
        keys = requests.get(f"{url}/.well-known/jwks.json", timeout=10).json()["keys"]
        assert len(keys) == 1 and keys[0]["alg"] == "ES256"

    def test_the_empty_persona_is_the_demos_steward(self, demo):
        url, _ = demo
        steward, _ = sign_in(url, "empty")
        assert steward.get(f"{url}/steward/", timeout=10).status_code == 200
        researcher, _ = sign_in(url, "qualified")
        assert researcher.get(f"{url}/steward/", timeout=10).status_code == 403

    def test_traversal_out_of_a_dataset_serves_nothing(self, demo):
        url, _ = demo
        browser, _ = sign_in(url, "qualified")
        for path in (
            "/datasets/sail-cohort/../../pyproject.toml",
            "/datasets/sail-cohort/%2e%2e/%2e%2e/pyproject.toml",
        ):
            response = browser.get(url + path, timeout=10)
            assert "build-system" not in response.text

    def test_ctrl_c_stops_everything_and_printed_the_url_then_one_line_per_decision(self, demo):
        url, process = demo
        process.send_signal(signal.SIGINT)
        try:
            _out, err = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)  # faulthandler: every thread's stack
            _out, err = process.communicate(timeout=15)
            pytest.fail(f"the demo did not stop within 15 s of Ctrl-C:\n{err[-6000:]}")
        assert process.returncode == 0
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines[0] == (
            f"orcid-gatekeeper demo: open {url} (ORCID emulator at "
            f"{lines[0].split('ORCID emulator at ')[1]}"
        )
        # The tests above made decisions: each is one readable line, never JSON.
        decisions = lines[1:]
        assert decisions, err
        assert all(
            re.fullmatch(r"\d\d:\d\d:\d\d \S+ (may open|may not open) \S+( \(.+\))?", d)
            for d in decisions
        ), decisions
        assert any("may not open sail-cohort (expired)" in d for d in decisions), decisions
        assert any("may open sail-cohort" in d for d in decisions), decisions
        assert "Traceback" not in err
