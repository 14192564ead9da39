"""Who and what a request was about, for gunicorn's access line (app/gunicorn_config.py).

The WSGI environ is the one object the app and gunicorn's access logger share, so the app
leaves the request id, the researcher's iD and the dataset there; the access line shows
them without parsing anything back out of the response.
"""

from __future__ import annotations

import uuid

from flask import g, request

REQUEST_ID, ORCID, DATASET = "gatekeeper.request_id", "gatekeeper.orcid", "gatekeeper.dataset"


def request_id(environ) -> str:
    """The proxy's X-Request-Id when it is sane (short, printable ASCII), else a fresh one."""
    found = environ.get(REQUEST_ID)
    if found:
        return found
    sent = environ.get("HTTP_X_REQUEST_ID", "")
    found = sent if 0 < len(sent) <= 128 and sent.isascii() and sent.isprintable() else None
    environ[REQUEST_ID] = found = found or uuid.uuid4().hex
    return found


def init_app(app) -> None:
    @app.after_request
    def _note_request(response):
        environ = request.environ
        response.headers.setdefault("X-Request-Id", request_id(environ))
        researcher = g.get("researcher")  # only when the page asked who is signed in
        if researcher is not None:
            environ[ORCID] = researcher.orcid
        dataset = (request.view_args or {}).get("name")
        if dataset is not None and request.blueprint == "pages":
            environ[DATASET] = dataset
        return response
