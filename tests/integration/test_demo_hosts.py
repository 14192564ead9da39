"""`gatekeeper demo` opened at localhost as well as at 127.0.0.1: sign-in completes at both."""

import subprocess

import pytest
import requests

from tests.integration.conftest import BIN, REPO, free_port, sign_in, wait_until


@pytest.fixture(scope="module")
def demo_port():
    port, orcid_port = free_port(), free_port()
    process = subprocess.Popen(
        [str(BIN / "gatekeeper"), "demo", "--port", str(port), "--orcid-port", str(orcid_port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok, what="demo")
    yield port
    process.kill()
    process.wait()


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_sign_in_comes_back_to_the_host_it_started_at(demo_port, host):
    url = f"http://{host}:{demo_port}"
    browser, response = sign_in(url, "qualified", "/datasets/sail-cohort/README.txt")
    assert response.status_code == 302, response.text
    assert response.headers["Location"] == "/datasets/sail-cohort/README.txt"
    assert response.url.startswith(f"{url}/callback?")
    file = browser.get(f"{url}/datasets/sail-cohort/README.txt", timeout=10)
    assert file.status_code == 200 and "SAIL cohort extract (demo)" in file.text
