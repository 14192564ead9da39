"""The reverse-proxy configs in docs/proxies/, rendered for a test and run as real processes.

The docs are written with literal addresses: the gatekeeper at 127.0.0.1:8000, the file
server at 127.0.0.1:8081, browsers on port 8080. ``render`` swaps exactly those literals
for free loopback ports and temporary paths, and fails if one is missing, so an edit to
the docs that these tests would silently stop exercising fails loudly instead.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import unquote

import pytest
import redis
import requests

from tests.integration.conftest import (
    BIN,
    REPO,
    Gatekeeper,
    free_port,
    gatekeeper_env,
    sign_in,
    stop,
)

DOCS = REPO / "docs" / "proxies"
NGINX = "/usr/sbin/nginx"
START_TIMEOUT = 15.0  # seconds; each proxy is ready within about two
LOG_TAIL = 4000  # characters of a log shown in a failure message


def render(source: Path, substitutions: dict[str, str]) -> str:
    """``source``'s text with each literal replaced by its value.

    :raises AssertionError: naming every literal the file no longer contains.
    """
    text = source.read_text()
    missing = [literal for literal in substitutions if literal not in text]
    assert not missing, (
        f"{source.relative_to(REPO)} no longer contains {missing}: update the substitutions "
        f"in tests/integration/proxies.py along with the docs"
    )
    for literal, value in substitutions.items():
        text = text.replace(literal, value)
    # Everything a test starts listens on loopback only.
    settings = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert not any("0.0.0.0" in line for line in settings), (
        f"{source.name}: a listener left on every interface"
    )
    return text


def tail(path: Path) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path} was never written)"
    return text[-LOG_TAIL:] or f"({path} is empty)"


class Proxy:
    """One real proxy process serving a config rendered from docs/proxies/."""

    name = ""
    # Settings the gatekeeper behind this proxy needs besides PUBLIC_URL.
    gatekeeper_settings: dict[str, str] = {}

    def __init__(self, tmp: Path, port: int, gatekeeper_port: int, files_port: int):
        self.tmp = tmp
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.gatekeeper_port, self.files_port = gatekeeper_port, files_port
        self.gatekeeper = f"127.0.0.1:{gatekeeper_port}"
        self.files = f"127.0.0.1:{files_port}"
        self.log_path = tmp / f"{self.name}.log"
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        """Write the rendered configs into ``tmp``; return the command that serves them."""
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        return None

    def start(self):
        """Start the proxy and wait until it routes /healthz to the gatekeeper."""
        command = self.command()
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.tmp,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        last = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.logs()}"
                )
            try:
                if requests.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
                last = "not routing /healthz yet"
            except requests.RequestException as exc:
                last = exc
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"{self.name} was not ready within {START_TIMEOUT}s ({last}):\n{self.logs()}"
        )

    def stop(self):
        if self.process is not None:
            stop(self.process)

    def logs(self) -> str:
        return f"--- {self.log_path} ---\n{tail(self.log_path)}"


class Nginx(Proxy):
    """nginx in the foreground; the docs' server block included in a minimal nginx.conf.

    The docs file is meant for /etc/nginx/conf.d/, inside Debian's nginx.conf; here a
    wrapper supplies the rest (pid, logs and temp paths inside ``tmp``).
    """

    name = "nginx"

    @property
    def access_log(self) -> Path:
        return self.tmp / "nginx-access.log"

    def command(self):
        site = self.tmp / "gatekeeper.conf"
        site.write_text(
            render(
                DOCS / "nginx.conf",
                {
                    "listen 8080;": f"listen 127.0.0.1:{self.port};",
                    "127.0.0.1:8000": self.gatekeeper,
                    "127.0.0.1:8081": self.files,
                    "/var/log/nginx/orcid-gatekeeper.access.log": str(self.access_log),
                    "/var/cache/nginx/orcid-gatekeeper": str(self.tmp / "auth-cache"),
                },
            )
        )
        main = self.tmp / "nginx.conf"
        # As root, nginx's workers run as nobody, who cannot enter pytest's private
        # temporary folders (the auth cache among them): keep them root, as the test is.
        user = "user root;\n" if os.geteuid() == 0 else ""
        main.write_text(
            "daemon off;\n"
            f"{user}"
            "worker_processes 1;\n"
            f"pid {self.tmp}/nginx.pid;\n"
            f"error_log {self.log_path} info;\n"
            "events { worker_connections 256; }\n"
            "http {\n"
            f"    access_log {self.tmp}/nginx-other-access.log;\n"
            f"    client_body_temp_path {self.tmp}/client_body;\n"
            f"    proxy_temp_path {self.tmp}/proxy;\n"
            f"    fastcgi_temp_path {self.tmp}/fastcgi;\n"
            f"    uwsgi_temp_path {self.tmp}/uwsgi;\n"
            f"    scgi_temp_path {self.tmp}/scgi;\n"
            f"    include {site};\n"
            "}\n"
        )
        # -e: errors before the config is read go to our log too, not /var/log/nginx.
        return [NGINX, "-p", str(self.tmp), "-c", str(main), "-e", str(self.log_path)]

    def logs(self):
        return super().logs() + f"\n--- access log ---\n{tail(self.access_log)}"


class Caddy(Proxy):
    """Caddy serving the docs' Caddyfile; ``site_address`` is the edit README.md names."""

    name = "caddy"
    site_address = "http://:{port}"

    def command(self):
        config = self.tmp / "Caddyfile"
        config.write_text(
            render(
                DOCS / "Caddyfile",
                {
                    # A site address binds every interface: `bind` keeps it to loopback.
                    "http://:8080 {": self.site_address.format(port=self.port)
                    + " {\n\tbind 127.0.0.1",
                    "127.0.0.1:8000": self.gatekeeper,
                    "127.0.0.1:8081": self.files,
                },
            )
        )
        return [str(BIN / "caddy"), "run", "--config", str(config), "--adapter", "caddyfile"]

    def environment(self):
        # Caddy keeps data and config under XDG directories: keep them in tmp.
        return {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.tmp),
            "XDG_DATA_HOME": str(self.tmp / "data"),
            "XDG_CONFIG_HOME": str(self.tmp / "config"),
        }


class Traefik(Proxy):
    name = "traefik"

    def command(self):
        dynamic = self.tmp / "traefik-dynamic.yaml"
        dynamic.write_text(
            render(
                DOCS / "traefik-dynamic.yaml",
                {
                    "127.0.0.1:8000": self.gatekeeper,
                    "127.0.0.1:8081": self.files,
                },
            )
        )
        static = self.tmp / "traefik.yaml"
        static.write_text(
            render(
                DOCS / "traefik.yaml",
                {
                    'address: ":8080"': f'address: "127.0.0.1:{self.port}"',
                    "/etc/traefik/traefik-dynamic.yaml": str(dynamic),
                },
            )
        )
        return [str(BIN / "traefik"), f"--configFile={static}"]

    def environment(self):
        return {"PATH": "/usr/bin:/bin", "HOME": str(self.tmp)}


class Envoy(Proxy):
    name = "envoy"

    def command(self):
        def socket(host, port):
            return f"{{address: {host}, port_value: {port}}}"

        config = self.tmp / "envoy.yaml"
        config.write_text(
            render(
                DOCS / "envoy.yaml",
                {
                    socket("0.0.0.0", 8080): socket("127.0.0.1", self.port),
                    socket("127.0.0.1", 8000): socket("127.0.0.1", self.gatekeeper_port),
                    "uri: http://127.0.0.1:8000": f"uri: http://{self.gatekeeper}",
                    socket("127.0.0.1", 8081): socket("127.0.0.1", self.files_port),
                },
            )
        )
        # A base id of its own (our pid: no other running test run has it) keeps this
        # Envoy's shared memory apart from any other Envoy's on the machine.
        return [
            str(BIN / "envoy"),
            "-c",
            str(config),
            "--base-id",
            str(os.getpid()),
            "--concurrency",
            "2",
            "--log-level",
            "warning",
        ]


PROXIES = {proxy.name: proxy for proxy in (Nginx, Caddy, Traefik, Envoy)}


def missing_binary(name: str) -> str | None:
    path = NGINX if name == "nginx" else str(BIN / name)
    if shutil.which(path) is None:
        return f"{path} is missing: `make test` installs nginx and the [test] extras"
    return None


# --- a proxy with a gatekeeper of its own, as a browser sees them --------------------------

# gunicorn's access line for each request the gatekeeper answers, with the client port of
# the connection it came on: fewer ports than requests means the proxy kept connections.
ACCESS_LOG_FORMAT = "port=%({remote_port}e)s %(m)s %(U)s %(s)s"


class Site:
    """One proxy with its gatekeeper and the file server behind it."""

    def __init__(self, proxy: Proxy, gatekeeper: Gatekeeper, files: FileServer):
        self.proxy, self.gatekeeper, self.files = proxy, gatekeeper, files
        self.url = proxy.url

    def get(self, path, browser=requests, **kwargs):
        return browser.get(self.url + path, allow_redirects=False, timeout=15, **kwargs)

    def sign_in(self, persona, next_path="/"):
        browser, response = sign_in(self.url, persona, next_path)
        assert response.status_code == 302, self.explain(response)
        return browser

    def gatekeeper_requests(self) -> list[tuple[int, str]]:
        """(client port, path) of every request the gatekeeper answered so far."""
        found = []
        with open(self.proxy.tmp / "gatekeeper.log") as log:
            for line in log:
                if not line.startswith("{"):
                    continue
                entry = json.loads(line)
                if entry.get("logger") == "gunicorn.access":
                    port, _method, path, _status = entry["message"].split(" ", 3)
                    found.append((int(port.removeprefix("port=")), path))
        return found

    def explain(self, response) -> str:
        """What went wrong, with the logs of everything behind the proxy."""
        request = response.request
        return (
            f"{request.method} {request.url} -> {response.status_code}\n"
            f"headers: {dict(response.headers)}\nbody: {response.text[:500]}\n"
            f"file server saw: {[path for path, _ in self.files.seen]}\n"
            f"{self.proxy.logs()}\n"
            f"--- gatekeeper ---\n{tail(self.proxy.tmp / 'gatekeeper.log')}"
        )

    def stop(self):
        self.proxy.stop()
        self.gatekeeper.stop()


class Sites:
    """Each proxy from its docs config in front of a gatekeeper of its own, started when
    first asked for and kept until ``stop``.

    Each gatekeeper gets a Redis database of its own (``first_database`` on), so that
    (say) one gatekeeper's rate limit on "check again" does not carry over to the next.
    """

    def __init__(self, tmp_path_factory, emulator, redis_server, files, first_database=1):
        self.tmp_path_factory, self.emulator = tmp_path_factory, emulator
        self.redis_server, self.files, self.first_database = redis_server, files, first_database
        self.started: dict[str, Site] = {}

    def get(self, name: str, proxy_class: type[Proxy] | None = None, **settings) -> Site:
        if name not in self.started:
            self.started[name] = self.start(name, proxy_class or PROXIES[name], settings)
        return self.started[name]

    def start(self, name: str, proxy_class: type[Proxy], settings: dict) -> Site:
        problem = missing_binary(proxy_class.name)
        if problem:
            pytest.fail(problem)
        if self.redis_server.process.poll() is not None:  # another module's test stopped it
            self.redis_server.start()
        database = self.first_database + len(self.started)
        redis_url = f"{self.redis_server.url.rsplit('/', 1)[0]}/{database}"
        with redis.Redis.from_url(redis_url) as client:
            client.flushdb()
        tmp = self.tmp_path_factory.mktemp(name)
        port, gatekeeper_port = free_port(), free_port()
        proxy = proxy_class(tmp, port, gatekeeper_port, self.files.port)
        env = gatekeeper_env(
            tmp,
            self.emulator,
            redis_url,
            public_url=proxy.url,
            GUNICORN_ACCESSLOG="-",
            GUNICORN_ACCESS_LOG_FORMAT=ACCESS_LOG_FORMAT,
            **{**proxy.gatekeeper_settings, **settings},
        )
        gatekeeper = Gatekeeper(env, gatekeeper_port)
        try:
            proxy.start()
        except BaseException:
            gatekeeper.stop()
            raise
        return Site(proxy, gatekeeper, self.files)

    def stop(self):
        for site in self.started.values():
            site.stop()
        self.started.clear()


# --- the file server behind the proxy ------------------------------------------------------

STATIC, SERVLET = "static", "servlet"


def servlet_path(target: str) -> str:
    """The path a servlet container would serve for ``target``: its rules, simplified.

    Tomcat's and Jetty's order: ``;params`` are dropped from each segment, then dot
    segments are resolved (RFC 3986: an empty segment counts), then escapes are decoded,
    once, and the result is handed to the file system as it is.
    """
    path = target.split("?", 1)[0]
    resolved: list[str] = []
    for segment in path.split("/")[1:]:
        segment = segment.split(";", 1)[0]
        if segment == "..":
            if resolved:
                resolved.pop()
        elif segment != ".":
            resolved.append(segment)
    return unquote("/" + "/".join(resolved))


class FileServer:
    """A file server on loopback that remembers what each request carried and was served.

    It stands for the data portal behind the proxy: the tests read ``seen`` to prove which
    requests reached it and with which identity headers, and ``served`` for which file
    each one got. ``rules`` says how it reads a path: ``static`` is Python's
    ``http.server`` (decode, then resolve; ``#`` ends the path), ``servlet`` follows
    ``servlet_path``.
    """

    def __init__(self, root: Path, rules: str = STATIC):
        self.root = root.resolve()
        self.rules = rules
        self.seen: list[tuple[str, http.client.HTTPMessage]] = []
        # (request target, X-Auth-Request-Dataset it carried, file or folder served)
        self.served: list[tuple[str, str | None, Path]] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(server.root), **kwargs)

            def translate_path(self, path):
                if server.rules == STATIC:
                    return super().translate_path(path)
                try:
                    found = Path(os.path.realpath(f"{server.root}/{servlet_path(path)}"))
                except ValueError:  # a NUL byte
                    return str(server.root / "no such file")
                return str(found if found.is_relative_to(server.root) else server.root / "none")

            def send_head(self):
                server.seen.append((self.path, self.headers))
                body = super().send_head()
                if body is not None:
                    target = Path(self.translate_path(self.path)).resolve()
                    judged = self.headers.get("X-Auth-Request-Dataset")
                    server.served.append((self.path, judged, target))
                return body

            def log_message(self, format, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_port
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="file-server", daemon=True
        )
        self.thread.start()

    def put(self, path: str, content: str):
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)

    def url_path(self, served: Path) -> str:
        """The clean URL path of a file or folder served, as the policy's prefixes read it."""
        relative = served.relative_to(self.root).as_posix()
        return "/" if relative == "." else f"/{relative}" + ("/" if served.is_dir() else "")

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
