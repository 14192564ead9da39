"""Real servers on free loopback ports: redis-server, the ORCID emulator, gunicorn.

Each is session-scoped, waits until it answers, and is stopped in a finalizer. A
missing binary fails loudly: these tests never skip.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import requests

REPO = Path(__file__).parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, timeout=15.0, what="server"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start within {timeout}s (last error: {last})")


def stop(process: subprocess.Popen, sig=signal.SIGTERM):
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class RedisServer:
    def __init__(self, tmp: Path):
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise RuntimeError("redis-server is not installed: run `make test`, which installs it")
        self.tmp = tmp
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.client = redis.Redis(port=self.port, decode_responses=True, socket_timeout=2)
        self.start()

    def start(self):
        """Start (or restart, after a test stopped it) on the same port."""
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self.client.ping, what="redis-server")

    def stop(self):
        stop(self.process)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server):
    """A clean Redis for each test."""
    if redis_server.process.poll() is not None:
        redis_server.start()
    redis_server.client.flushall()
    return redis_server.url


# --- the ORCID emulator -----------------------------------------------------------------

EMULATOR_CLIENT = {
    "client_id": "APP-GATEKEEPERTEST01",
    "client_secret": "test-secret",
    "name": "Gatekeeper under test",
    "redirect_uris": "any-loopback",
    "member": False,
}


@pytest.fixture(scope="session")
def emulator():
    """The project's ORCID emulator, served on a loopback port for the whole session."""
    from app.emulator import create_app
    from app.emulator.server import serve_in_thread

    base_url, shutdown = serve_in_thread(create_app(clients=[EMULATOR_CLIENT]))
    yield Emulator(base_url)
    shutdown()


class Emulator:
    def __init__(self, base_url: str):
        self.url = base_url.rstrip("/")

    def reset(self):
        requests.post(f"{self.url}/_emulator/reset", timeout=5).raise_for_status()

    def requests(self) -> dict:
        return requests.get(f"{self.url}/_emulator/requests", timeout=5).json()

    def faults(self, **settings):
        requests.post(f"{self.url}/_emulator/faults", json=settings, timeout=5).raise_for_status()


@pytest.fixture
def orcid(emulator):
    """The emulator with counters and faults reset for this test."""
    emulator.reset()
    yield emulator
    emulator.reset()


# --- the gatekeeper under gunicorn -------------------------------------------------------


class Gatekeeper:
    """A gunicorn process serving ``app:create_app()`` with the given environment."""

    def __init__(self, env: dict, port: int, workers: int = 2):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(env["GK_LOG"], "w")
        self.process = subprocess.Popen(
            [
                str(BIN / "gunicorn"),
                "-c",
                "gunicorn.conf.py",
                "app:create_app()",
                "-b",
                f"127.0.0.1:{port}",
                "-w",
                str(workers),
            ],
            cwd=REPO,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until(
            lambda: requests.get(f"{self.url}/healthz", timeout=1).ok,
            what=f"gatekeeper (log: {env['GK_LOG']})",
        )

    def stop(self):
        # Quick shutdown: a graceful one waits out the test clients' keep-alive connections.
        stop(self.process, signal.SIGINT)
        self.log.close()


def scratch_dir(tmp_path: Path) -> Path:
    """The TMPDIR a test's gunicorn gets."""
    scratch = tmp_path / "gunicorn-tmp"
    scratch.mkdir(exist_ok=True)
    return scratch


def gatekeeper_env(tmp_path, emulator, redis_url=None, public_url=None, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCID_", "GUNICORN_"))}
    # The one gunicorn setting a run may choose: `GUNICORN_HTTP_PARSER=fast make test`
    # runs the whole suite under gunicorn's C parser (gunicorn_h1c must be installed).
    if os.environ.get("GUNICORN_HTTP_PARSER"):
        env["GUNICORN_HTTP_PARSER"] = os.environ["GUNICORN_HTTP_PARSER"]
    env.update(
        ORCID_BASE_URL=emulator.url,
        ORCID_API_URL=f"{emulator.url}/v3.0",
        ORCID_CLIENT_ID=EMULATOR_CLIENT["client_id"],
        ORCID_CLIENT_SECRET=EMULATOR_CLIENT["client_secret"],
        POLICY_PATH=str(REPO / "policies"),
        SECRET_KEY="integration-test-secret-key-0123456789",
        GK_LOG=str(tmp_path / "gatekeeper.log"),
        # The test's own: a metrics directory or worker file left behind shows there.
        TMPDIR=str(scratch_dir(tmp_path)),
    )
    env.update(extra)
    if redis_url:
        env["REDIS_URL"] = redis_url
    if public_url:
        env["PUBLIC_URL"] = public_url
    return env


@pytest.fixture
def start_gatekeeper(tmp_path, emulator):
    """Start gunicorn serving the gatekeeper; stopped after the test."""
    started = []

    def start(redis_url=None, port=None, public_url=None, workers=2, **extra):
        port = port or free_port()
        env = gatekeeper_env(
            tmp_path, emulator, redis_url, public_url or f"http://127.0.0.1:{port}", **extra
        )
        server = Gatekeeper(env, port, workers)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def raw_get(port: int, path: str, headers=()) -> tuple[int, str]:
    """GET ``path`` on loopback exactly as written (requests would resolve dot segments),
    with ``headers``, (name, value) pairs, sent in order and as spelled, repeats included.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        connection.putrequest("GET", path)
        for name, value in headers:
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def sign_in(base_url: str, persona: str, next_path: str = "/", decision: str = "authorize"):
    """Walk the browser's sign-in: /login -> ORCID (emulator) -> /callback.

    Returns (requests.Session holding the cookie, the final response).
    """
    browser = requests.Session()
    response = browser.get(
        f"{base_url}/login", params={"next": next_path}, allow_redirects=False, timeout=10
    )
    assert response.status_code == 302, response.text
    authorize = response.headers["Location"]
    response = browser.get(
        authorize,
        params={"persona": persona, "decision": decision},
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code in (302, 303), response.text
    callback = response.headers["Location"]
    response = browser.get(callback, allow_redirects=False, timeout=10)
    return browser, response
