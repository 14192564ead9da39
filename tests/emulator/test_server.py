"""The emulator served over real HTTP, as integration tests and the demo use it."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from app.emulator.server import serve_in_thread
from tests.emulator.conftest import CLIENT_ID, ORCID_JSON, QUALIFIED, SECRET


@pytest.fixture
def base_url(app):
    url, stop = serve_in_thread(app)
    yield url
    stop()


class TestServeInThread:
    def test_sign_in_then_read_qualifications_over_http(self, base_url):
        redirect_uri = "http://127.0.0.1:45678/callback"  # any loopback port will do
        response = requests.get(
            f"{base_url}/oauth/authorize",
            allow_redirects=False,
            params={
                "client_id": CLIENT_ID,
                "response_type": "code",
                "scope": "/read-limited",
                "redirect_uri": redirect_uri,
                "state": "s1",
                "persona": "qualified",
                "decision": "authorize",
            },
        )
        assert response.status_code == 302
        query = parse_qs(urlsplit(response.headers["Location"]).query)
        token = requests.post(
            f"{base_url}/oauth/token",
            data={
                "client_id": CLIENT_ID,
                "client_secret": SECRET,
                "grant_type": "authorization_code",
                "code": query["code"][0],
                "redirect_uri": redirect_uri,
            },
        ).json()
        assert token["orcid"] == QUALIFIED
        summary = requests.get(
            f"{base_url}/v3.0/{QUALIFIED}/qualifications",
            headers={"Accept": ORCID_JSON, "Authorization": f"Bearer {token['access_token']}"},
        )
        assert summary.status_code == 200
        assert summary.headers["Content-Type"] == ORCID_JSON
        assert len(summary.json()["affiliation-group"]) == 4  # 5 visible items, 2 share a group

    def test_base_url_is_on_loopback(self, base_url):
        assert urlsplit(base_url).hostname == "127.0.0.1"

    def test_stop_closes_the_port(self, app):
        url, stop = serve_in_thread(app)
        stop()
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/_emulator/requests", timeout=2)

    @pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "example.org"])
    def test_non_loopback_host_is_refused(self, app, host):
        with pytest.raises(ValueError, match="loopback"):
            serve_in_thread(app, host=host)


def test_module_entry_point_refuses_a_bad_redirect_uri_in_one_line():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "app.emulator", "--redirect-uri", "ftp://x/cb", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        "python -m app.emulator: error: --redirect-uri: 'ftp://x/cb' is not an absolute http(s) URL"
    )
