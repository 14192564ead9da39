"""The one place that turns errors into pages: never a stack trace to a person."""

from __future__ import annotations

import logging

from flask import Response, render_template
from flask.globals import request_ctx
from werkzeug.exceptions import HTTPException

from app.errors import GatekeeperError, UnknownDataset

logger = logging.getLogger(__name__)


def init_app(app):
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(UnknownDataset, _unknown_dataset)
    app.register_error_handler(GatekeeperError, _gatekeeper_error)
    app.register_error_handler(Exception, _unexpected)


def _page(title: str, message: str, status: int):
    # A Host header werkzeug cannot route (an empty or 64-character label) leaves Flask
    # without a URL adapter, and the page's links without URLs: the message in plain text.
    if request_ctx and request_ctx.url_adapter is None:
        return Response(f"{title}\n\n{message}\n", status, mimetype="text/plain")
    return render_template("message.html", title=title, message=message), status


def _http_error(exc: HTTPException):
    return _page(f"{exc.code} {exc.name}", exc.description, exc.code)


def _unknown_dataset(exc: UnknownDataset):
    return _page("No such dataset", exc.message, 404)


def _gatekeeper_error(exc: GatekeeperError):
    logger.warning("request failed: %s", exc.reason)
    return _page("Something went wrong", exc.message, 500)


def _unexpected(exc: Exception):
    logger.exception("unexpected error")
    return _page(
        "Something went wrong",
        "An unexpected error occurred. It has been logged; please try again.",
        500,
    )
