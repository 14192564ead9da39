"""Serving the emulator over real HTTP on loopback: in a test's thread, or in the foreground."""

from __future__ import annotations

import ipaddress
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from flask import Flask
from werkzeug.serving import WSGIRequestHandler, make_server

from app.emulator import create_app


def serve_in_thread(
    app: Flask, host: str = "127.0.0.1", port: int = 0
) -> tuple[str, Callable[[], None]]:
    """Serve ``app`` threaded on a loopback port (a free one by default).

    Returns the base URL and a function that stops the server and waits for it.

    :raises ValueError: for a host that is not loopback.
    """
    server = make_server(_loopback(host), port, app, threaded=True, request_handler=_Quiet)
    # A short poll interval: stop() waits up to one interval for the loop to notice.
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="orcid-emulator", daemon=True
    )
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return f"http://{_url_host(host)}:{server.server_port}", stop


def run(
    host: str = "127.0.0.1",
    port: int = 8001,
    fixtures: str | Path | None = None,
    redirect_uris: tuple[str, ...] | list[str] = (),
) -> None:
    """Serve the emulator in the foreground until interrupted (``gatekeeper emulator``).

    ``redirect_uris`` (``--redirect-uri``) are accepted for every registered client, so an
    integrator's own app can sign in without a fixture file of its own.

    :raises ValueError: for a host that is not loopback.
    :raises FixtureError: when the fixture file or a redirect URI has problems.
    """
    app = create_app(fixtures, redirect_uris=redirect_uris)
    server = make_server(_loopback(host), port, app, threaded=True)
    base_url = f"http://{_url_host(host)}:{server.server_port}"
    print(f"ORCID emulator (not orcid.org) on {base_url}; Ctrl-C stops it", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


class _Quiet(WSGIRequestHandler):
    """No line per request: a test's output is for its own failures."""

    def log_request(self, *args, **kwargs) -> None:
        pass


def _loopback(host: str) -> str:
    # The emulator hands a token to anyone who asks, so it never listens beyond this machine.
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"the ORCID emulator only listens on loopback, not {host!r}")
    return host


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
