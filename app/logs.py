"""Logging as one JSON object per line, configured once before the app is built.

Decision lines carry the ORCID iD, dataset, outcome, reason codes and policy version;
nothing here ever formats a token, a cookie or an ORCID response body.
"""

from __future__ import annotations

import datetime as dt
import json
import logging

# Attributes every LogRecord has; anything else was passed as ``extra=`` and is logged.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def logging_config(level: str = "INFO") -> dict:
    """A ``logging.config.dictConfig`` dict: ours and gunicorn's loggers, as JSON on stderr."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stderr": handler},
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            "gunicorn.error": {"handlers": ["stderr"], "level": level, "propagate": False},
            "gunicorn.access": {"handlers": ["stderr"], "level": level, "propagate": False},
        },
    }


class DecisionLineFormatter(logging.Formatter):
    """One readable line per decision, for a person watching the demo's terminal."""

    def format(self, record: logging.LogRecord) -> str:
        when = dt.datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        outcome = getattr(record, "outcome", "?")
        verb = {"allow": "may open", "deny": "may not open", "error": "could not be checked for"}
        why = ", ".join(getattr(record, "reasons", None) or [])
        line = (
            f"{when} {getattr(record, 'orcid', '?')} {verb.get(outcome, outcome)} "
            f"{getattr(record, 'dataset', '?')}"
        )
        return f"{line} ({why})" if why else line


def demo_logging() -> None:
    """The demo's terminal: decisions as readable lines, warnings and errors as they come."""
    handler = logging.StreamHandler()
    handler.setFormatter(DecisionLineFormatter())
    decisions = logging.getLogger("app.decisions")
    decisions.addHandler(handler)
    decisions.setLevel(logging.INFO)
    decisions.propagate = False
