"""Gunicorn settings from the environment; `-b` and `-w` on the command line override.

gunicorn -c gunicorn.conf.py 'app:create_app()'
"""

import os
import sys
import tempfile

from gunicorn.glogging import Logger

from app.logs import logging_config

bind = os.environ.get("GUNICORN_BIND", os.environ.get("BIND", "127.0.0.1:8000"))
workers = int(os.environ.get("GUNICORN_WORKERS", os.environ.get("WEB_CONCURRENCY", "2")))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_class = "gthread" if threads > 1 else "sync"
# Load the app (and the policy) once in the master: a worker that restarts later forks
# from it, so a policy file broken since start-up cannot stop workers from booting.
preload_app = True
# A cold decision may wait on ORCID for up to ORCID_TIMEOUT (8 s by default).
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "20"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
accesslog = os.environ.get("GUNICORN_ACCESSLOG") or None
access_log_format = os.environ.get(
    "GUNICORN_ACCESS_LOG_FORMAT", '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
)
errorlog = "-"


class QuerylessAccessLogger(Logger):
    """Gunicorn's logger, with every URL in an access line cut before its query string.

    /callback's query carries ORCID's authorization code and our OAuth state, /login's
    Location carries the state, and /login?next= and /auth's X-Original-URI carry URLs
    of the researcher's choosing. Cutting every request's query, not only /callback's,
    also covers the forms that route to the callback under another spelling (PATH_INFO
    decodes /%63allback to /callback; RAW_URI keeps it as sent). The app logs its own
    decisions, so no access line needs a query.
    """

    # Atoms besides the request line (gunicorn's names: referer, {header}i, {header}o,
    # {environ}e) that can hold a URL with a query.
    URL_ATOMS = (
        "f",
        "{referer}i",
        "{location}o",
        "{x-original-uri}i",
        "{x-original-url}i",
        "{x-forwarded-uri}i",
        "{raw_uri}e",
        "{request_uri}e",
        "{http_referer}e",
        "{http_x_original_uri}e",
        "{http_x_original_url}e",
        "{http_x_forwarded_uri}e",
    )

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        for name in self.URL_ATOMS:
            if isinstance(atoms.get(name), str):
                atoms[name] = atoms[name].partition("?")[0]
        path = environ["RAW_URI"].partition("?")[0]
        atoms["r"] = f"{environ['REQUEST_METHOD']} {path} {environ['SERVER_PROTOCOL']}"
        atoms["q"] = atoms["{query_string}e"] = "-"
        return atoms


logger_class = QuerylessAccessLogger
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")
# One JSON object per line, for our loggers and gunicorn's alike.
logconfig_dict = logging_config(loglevel.upper())
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")


# Each worker writes its metrics here and /metrics adds them up; it must be set before
# any worker imports prometheus_client. A fresh directory per start: no stale samples.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="gatekeeper-metrics-")


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def _check_settings():
    """Settings and policy, checked before anything loads: a problem is one line, then exit.

    NOTE: this runs when gunicorn reads this file, because with preload_app the app is
    built before any server hook (on_starting included) would run.
    """
    from app.errors import ConfigError, PolicyError
    from app.policy import load_policy
    from app.settings import Settings

    try:
        settings = Settings.from_env()
        problems = settings.service_problems()
        if problems:
            raise ConfigError("; ".join(problems))
        load_policy(settings.policy_path)
    except PolicyError as exc:
        print(f"orcid-gatekeeper: POLICY_PATH: {exc.message}", file=sys.stderr)
        sys.exit(3)
    except ConfigError as exc:
        print(f"orcid-gatekeeper: {exc.message}", file=sys.stderr)
        sys.exit(3)


_check_settings()


def on_starting(server):
    """More than one worker needs Redis: sessions and decisions must be shared."""
    from app.settings import Settings

    settings = Settings.from_env()
    if server.cfg.workers > 1 and not settings.redis_url and not settings.demo:
        print(
            f"orcid-gatekeeper: REDIS_URL: required with {server.cfg.workers} workers "
            "(sessions, decisions and locks must be shared); set it, or run one worker",
            file=sys.stderr,
        )
        sys.exit(3)
