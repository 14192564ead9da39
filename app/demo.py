"""``gatekeeper demo``: the ORCID emulator and the gatekeeper in one process, no account needed.

Sample dataset files are served behind the very check a reverse proxy makes: each file
request is first put to the forward-auth layer as nginx's ``auth_request`` would.
"""

from __future__ import annotations

import mimetypes
import secrets
import sys
from pathlib import Path
from urllib.parse import quote

from cryptography.fernet import Fernet
from markupsafe import escape
from werkzeug.security import safe_join
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.utils import redirect
from werkzeug.wrappers import Response

from app.logs import demo_logging
from app.settings import Settings

DATASETS = Path(__file__).parent / "examples" / "datasets"
# The "empty" persona (no qualifications) is the demo's data steward: /steward/.
DEMO_STEWARD = "0009-0000-0000-0113"
DEMO_CLIENT = {
    "client_id": "APP-GATEKEEPERDEMO01",
    "client_secret": "demo-secret",
    "name": "ORCID Gatekeeper (demo)",
    "redirect_uris": "any-loopback",
    # A member client, as the demo adds qualifications too (issuing needs the member API).
    "member": True,
}


class DemoFiles:
    """Serves ``app/examples/datasets/<dataset>/...`` for protected paths, after /auth says yes."""

    def __init__(self, wsgi_app, forward_auth, policy_file, headers=()):
        self.wsgi_app, self.forward_auth, self.policy_file = wsgi_app, forward_auth, policy_file
        self.headers = list(headers)  # the pages' security headers, on files and refusals

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        dataset = self.policy_file.current.dataset_for_path(path)
        if dataset is None or not path.startswith(tuple(dataset.paths)):
            return self.wsgi_app(environ, start_response)
        check = dict(environ, PATH_INFO="/auth", QUERY_STRING="", HTTP_X_ORIGINAL_URI=path)
        status, headers = self.forward_auth.answer(check, "/auth")
        if status.startswith("401") and headers:
            # A script's token failed: its challenge, never the sign-in page.
            response = Response("401 Unauthorized", 401, headers, mimetype="text/plain")
        elif status.startswith("401"):
            response = redirect("/login?next=" + quote(path, safe="/"))
        elif not status.startswith("200"):
            response = Response(
                f"<!doctype html><title>No access</title><h1>No access to "
                f"{escape(dataset.title)}</h1><p>See why on "
                f'<a href="/datasets/{escape(dataset.key)}">the dataset page</a>.</p>',
                403,
                mimetype="text/html",
            )
        else:
            response = self.serve(dataset, path, headers)
        for name, value in self.headers:
            response.headers.setdefault(name, value)
        return response(environ, start_response)

    def serve(self, dataset, path, identity_headers) -> Response:
        # The longest, as dataset_for_path chose the dataset by it.
        prefix = max((p for p in dataset.paths if path.startswith(p)), key=len)
        folder = DATASETS / dataset.key
        target = safe_join(str(folder), path[len(prefix) :]) if path != prefix else str(folder)
        if target is None or not Path(target).exists():
            return Response("No such file in the demo dataset.", 404)
        if Path(target).is_dir():
            names = sorted(p.name for p in Path(target).iterdir())
            links = "".join(
                f'<li><a href="{escape(prefix + n)}">{escape(n)}</a></li>' for n in names
            )
            title = escape(dataset.title)
            response = Response(
                f"<!doctype html><title>{title}</title><h1>{title}</h1><ul>{links}</ul>",
                mimetype="text/html",
            )
        else:
            kind = mimetypes.guess_type(target)[0] or "application/octet-stream"
            response = Response(Path(target).read_bytes(), mimetype=kind)
        for name, value in identity_headers:
            response.headers[name] = value
        return response


class _Quiet(WSGIRequestHandler):
    """The demo's output is the one line with its URL, not a line per request."""

    def log_request(self, *args, **kwargs):
        pass


def run_demo(
    host: str = "127.0.0.1",
    port: int = 8000,
    orcid_port: int = 8001,
    policy_path: str = "policies/",
):
    """Start the emulator and the gatekeeper; print one line with the URL; Ctrl-C stops both."""
    from app import create_app
    from app.emulator import create_app as create_emulator
    from app.emulator.server import serve_in_thread
    from app.web.security import security_headers

    orcid_url, stop_orcid = serve_in_thread(
        create_emulator(clients=[DEMO_CLIENT]), host, orcid_port
    )
    settings = Settings(
        orcid_base_url=orcid_url,
        orcid_api_url=f"{orcid_url}/v3.0",
        orcid_client_id=DEMO_CLIENT["client_id"],
        orcid_client_secret=DEMO_CLIENT["client_secret"],
        public_url=f"http://{host}:{port}",
        policy_path=policy_path,
        secret_key=secrets.token_urlsafe(32),
        demo=True,
        site_name="Dataset access (demo)",
        steward_contact="mailto:data-steward@example.org",
        steward_orcids=(DEMO_STEWARD,),
        # Made up per run: the demo keeps write tokens in its own memory only.
        write_token_key=Fernet.generate_key().decode(),
    )
    demo_logging()
    app = create_app(settings)
    gk = app.extensions["gatekeeper"]
    headers = security_headers(settings.orcid_base_url).items()
    app.wsgi_app = DemoFiles(app.wsgi_app, app.wsgi_app, gk.policy_file, headers)
    server = make_server(host, port, app, threaded=True, request_handler=_Quiet)
    print(
        f"orcid-gatekeeper demo: open http://{host}:{port} "
        f"(ORCID emulator at {orcid_url}); Ctrl-C stops it",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        stop_orcid()
