"""The one place that turns errors into pages: never a stack trace to a person."""

from __future__ import annotations

import logging

from flask import render_template
from werkzeug.exceptions import HTTPException

from app.errors import GatekeeperError, UnknownDataset

logger = logging.getLogger(__name__)


def init_app(app):
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(UnknownDataset, _unknown_dataset)
    app.register_error_handler(GatekeeperError, _gatekeeper_error)
    app.register_error_handler(Exception, _unexpected)


def _http_error(exc: HTTPException):
    return render_template(
        "message.html", title=f"{exc.code} {exc.name}", message=exc.description
    ), exc.code


def _unknown_dataset(exc: UnknownDataset):
    return render_template("message.html", title="No such dataset", message=exc.message), 404


def _gatekeeper_error(exc: GatekeeperError):
    logger.warning("request failed: %s", exc.reason)
    return render_template("message.html", title="Something went wrong", message=exc.message), 500


def _unexpected(exc: Exception):
    logger.exception("unexpected error")
    return render_template(
        "message.html",
        title="Something went wrong",
        message="An unexpected error occurred. It has been logged; please try again.",
    ), 500
