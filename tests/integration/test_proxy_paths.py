"""tests/data/hostile_paths.txt through the real nginx, Caddy, Traefik and Envoy.

Every path goes through each proxy's docs config to two file servers in turn: Python's
static ``http.server``, and one that reads paths as a servlet container does (``;params``
dropped, dot segments resolved, then decoded once: ``proxies.servlet_path``). The
researcher is admitted to ``survey-microdata`` and to a catch-all ``lobby`` at ``/``, and
refused ``sail-cohort``. For every path, the file server may serve only a file of the
dataset ``/auth`` judged (the ``X-Auth-Request-Dataset`` the proxy passed on with it);
otherwise the proxy must answer without reaching the file server, or the file server
must find nothing.
"""

from __future__ import annotations

import shutil
import socket

import pytest
import redis

from app.policy import load_policy
from tests.hostile_paths import read_hostile_paths
from tests.integration.conftest import REPO, Gatekeeper, free_port, gatekeeper_env, sign_in
from tests.integration.proxies import PROXIES, SERVLET, STATIC, FileServer, missing_binary, tail

RESEARCHER = "self-asserted"  # survey-microdata: yes (and so the lobby); sail-cohort: no
LOBBY = """
  lobby:
    title: Everything else on the site
    paths: [/]
    require: [data-protection]
"""
# Files whose body names their dataset; a path that resolves differently on the two file
# servers finds a file on each (the // cases).
FILES = [
    "/datasets/sail-cohort/hello.txt",
    "/datasets/sail-cohort/survey-microdata/hello.txt",
    "/datasets/survey-microdata/hello.txt",
    "/datasets/survey-microdata/sail-cohort/hello.txt",
]
PLAIN = "/datasets/survey-microdata/hello.txt"  # served on every proxy: the test is live
READ_LIMIT = 1 << 20


@pytest.fixture(scope="module")
def policies(tmp_path_factory):
    """The repository's policies with a catch-all dataset at /, which admits more."""
    folder = tmp_path_factory.mktemp("policies")
    for source in (REPO / "policies").glob("*.yaml"):
        shutil.copy(source, folder / source.name)
    with open(folder / "datasets.yaml", "a") as datasets:
        datasets.write(LOBBY)
    return folder


@pytest.fixture(scope="module")
def backend(tmp_path_factory, policies):
    server = FileServer(tmp_path_factory.mktemp("path-files"))
    policy = load_policy(policies)
    for path in FILES:
        server.put(path, f"dataset: {policy.dataset_for_path(path).key}\n")
    yield server
    server.stop()


class PathSite:
    """One proxy, a gatekeeper with the lobby policy, and the researcher's cookie."""

    def __init__(self, proxy, gatekeeper, backend, cookie):
        self.proxy, self.gatekeeper, self.backend, self.cookie = proxy, gatekeeper, backend, cookie

    def send(self, target: str) -> tuple[int | None, bytes]:
        """Send ``target`` byte for byte as the request line's target: (status, body)."""
        request = (
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{self.proxy.port}\r\n"
            f"Cookie: gatekeeper_session={self.cookie}\r\nConnection: close\r\n\r\n"
        ).encode("latin-1")
        with socket.create_connection(("127.0.0.1", self.proxy.port), timeout=15) as sock:
            sock.sendall(request)
            answer = b""
            # Read to the end of the body, not to the close: on a 400 Envoy lingers a
            # second before it closes.
            while len(answer) < READ_LIMIT and not _complete(answer):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        parts = head.split(b" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
        return status, body


def _complete(answer: bytes) -> bool:
    """Whether ``answer`` holds a whole response with a Content-Length."""
    head, found, body = answer.partition(b"\r\n\r\n")
    if not found:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return len(body) >= int(value)
    return False


@pytest.fixture(scope="module", params=list(PROXIES))
def path_site(request, tmp_path_factory, emulator, redis_server, backend, policies):
    name = request.param
    problem = missing_binary(name)
    if problem:
        pytest.fail(problem)
    if redis_server.process.poll() is not None:  # another module's test stopped it
        redis_server.start()
    # Databases 5-8: test_proxies.py's gatekeepers use 1-4.
    redis_url = f"{redis_server.url.rsplit('/', 1)[0]}/{list(PROXIES).index(name) + 5}"
    with redis.Redis.from_url(redis_url) as client:
        client.flushdb()
    tmp = tmp_path_factory.mktemp(f"paths-{name}")
    port, gatekeeper_port = free_port(), free_port()
    proxy = PROXIES[name](tmp, port, gatekeeper_port, backend.port)
    env = gatekeeper_env(
        tmp,
        emulator,
        redis_url,
        public_url=proxy.url,
        POLICY_PATH=str(policies),
        **proxy.gatekeeper_settings,
    )
    gatekeeper = Gatekeeper(env, gatekeeper_port)
    try:
        proxy.start()
        browser, response = sign_in(proxy.url, RESEARCHER)
        assert response.status_code == 302, response.text
    except BaseException:
        proxy.stop()
        gatekeeper.stop()
        raise
    yield PathSite(proxy, gatekeeper, backend, browser.cookies["gatekeeper_session"])
    proxy.stop()
    gatekeeper.stop()


@pytest.mark.parametrize("rules", [STATIC, SERVLET])
def test_every_hostile_path_serves_only_the_dataset_auth_judged(path_site, policies, rules):
    backend = path_site.backend
    backend.rules = rules
    policy = load_policy(policies)
    failures, outcomes = [], []
    for case in read_hostile_paths():
        backend.seen.clear()
        backend.served.clear()
        status, body = path_site.send(case.path)
        served = [
            (judged, policy.dataset_for_path(backend.url_path(target)))
            for _, judged, target in backend.served
        ]
        outcomes.append(f"{status} {[(j, d.key if d else None) for j, d in served]} {case.path!r}")
        for judged, dataset in served:
            if dataset is None or dataset.key != judged:
                failures.append(
                    f"line {case.line}: {case.path!r} -> {status}: served "
                    f"{dataset.key if dataset else None!r}, judged {judged!r}"
                )
        if not backend.seen and status not in (400, 403, 404):
            failures.append(
                f"line {case.line}: {case.path!r} -> {status} without reaching the file "
                f"server: {body[:120]!r}"
            )
        if case.path == PLAIN and served != [
            ("survey-microdata", policy.datasets["survey-microdata"])
        ]:
            failures.append(f"the plain path was not served: {status} {body[:200]!r}")
    assert not failures, (
        f"{path_site.proxy.name} with the {rules} file server:\n"
        + "\n".join(failures)
        + "\n\nevery outcome (status, [(judged, served)], path):\n"
        + "\n".join(outcomes)
        + f"\n{path_site.proxy.logs()}\n--- gatekeeper ---\n"
        + tail(path_site.proxy.tmp / "gatekeeper.log")
    )
