"""docs/proxies/Caddyfile: as `caddy fmt` writes it, and working when its site address is edited.

README.md names the site address (`http://:8080`) as the line to change. A host in it
(`127.0.0.1:8080`) without `http://` makes Caddy serve HTTPS on that port, with no
certificate: plain http answers 400 and HTTPS fails, so the scheme stays in the address.
"""

from __future__ import annotations

import difflib
import subprocess
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.integration.conftest import BIN
from tests.integration.proxies import DOCS, Caddy, FileServer, Sites, missing_binary

CADDYFILE = DOCS / "Caddyfile"
FILE = "/datasets/sail-cohort/hello.txt"


def test_the_shipped_caddyfile_is_as_caddy_fmt_writes_it():
    problem = missing_binary("caddy")
    if problem:
        pytest.fail(problem)
    result = subprocess.run(
        [str(BIN / "caddy"), "fmt", str(CADDYFILE)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    shipped = CADDYFILE.read_text()
    diff = "".join(
        difflib.unified_diff(
            shipped.splitlines(keepends=True),
            result.stdout.splitlines(keepends=True),
            "docs/proxies/Caddyfile",
            "caddy fmt",
        )
    )
    assert result.stdout == shipped, f"run `caddy fmt --overwrite` on it:\n{diff}"


@pytest.fixture(scope="module")
def sites(tmp_path_factory, emulator, redis_server):
    files = FileServer(tmp_path_factory.mktemp("caddy-files"))
    files.put(FILE, "hello\n")
    # Databases 9 on: test_proxies.py and test_proxy_paths.py use 1-8.
    started = Sites(tmp_path_factory, emulator, redis_server, files, first_database=9)
    yield started
    started.stop()
    files.stop()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_site_address_that_names_a_host_serves_plain_http(sites, host):
    class EditedCaddy(Caddy):
        site_address = f"http://{host}:{{port}}"

        def __init__(self, *args):
            super().__init__(*args)
            self.url = f"http://{host}:{self.port}"  # the gatekeeper's PUBLIC_URL too

    site = sites.get(f"caddy-{host}", EditedCaddy)
    response = site.get(FILE)
    # The gatekeeper's own answer, through Caddy (an address that matched no site would
    # get Caddy's empty 200, a TLS listener a 400).
    assert response.status_code == 302, site.explain(response)
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{site.url}/login"
    assert parse_qs(location.query)["next"] == [f"{site.url}{FILE}"]
