"""Gunicorn settings from the environment; `-b` and `-w` on the command line override.

    gunicorn -c gunicorn.conf.py 'app:create_app()'
"""

import os
import sys

bind = os.environ.get("GUNICORN_BIND", os.environ.get("BIND", "127.0.0.1:8000"))
workers = int(os.environ.get("GUNICORN_WORKERS", os.environ.get("WEB_CONCURRENCY", "2")))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_class = "gthread" if threads > 1 else "sync"
# A cold decision may wait on ORCID for up to ORCID_TIMEOUT (8 s by default).
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "20"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
accesslog = os.environ.get("GUNICORN_ACCESSLOG") or None
access_log_format = os.environ.get(
    "GUNICORN_ACCESS_LOG_FORMAT", '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
)
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")


def on_starting(server):
    """Check settings and policy once in the master: a problem is one line, then exit."""
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
