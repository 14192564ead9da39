"""Gunicorn settings from the environment; `-b` and `-w` on the command line override.

The packaged configuration, so that a pip install runs as a checkout does:
    gatekeeper serve                                   # gunicorn with this file
    gunicorn -c python:app.gunicorn_config 'app:create_app()'
    gunicorn -c gunicorn.conf.py 'app:create_app()'    # the checkout's file imports this
"""

import contextlib
import glob
import importlib.util
import os
import shutil
import sys
import tempfile

from gunicorn.glogging import Logger

from app.logs import logging_config
from app.web.access_log import DATASET, ORCID, request_id

_problems: list[str] = []


def _number(name: str, default: int, low: int, *fallbacks: str) -> int:
    """A whole number from the environment; a bad one is a problem naming the variable."""
    raw = next((os.environ[n] for n in (name, *fallbacks) if os.environ.get(n)), None)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        _problems.append(f"{name}: {raw!r} is not a whole number")
        return default
    if value < low:
        _problems.append(f"{name}: must be at least {low}")
        return default
    return value


# Empty is unset, as for every other setting (an empty bind listened on nothing).
bind = os.environ.get("GUNICORN_BIND", "").strip() or "127.0.0.1:8000"
workers = _number("GUNICORN_WORKERS", 2, 1, "WEB_CONCURRENCY")
threads = _number("GUNICORN_THREADS", 4, 1)
# gunicorn's gthread worker, with a quick shutdown (SIGINT, SIGQUIT) that cannot hang on
# its own thread pool's lock: app/gunicorn_worker.py says why.
worker_class = "app.gunicorn_worker.ThreadWorker" if threads > 1 else "sync"
# NOTE: a request waits before a thread takes it: in a gthread worker's own queue, or in
# the kernel's accept queue for sync workers. /auth learns how long from the kernel's
# TCP_INFO (forward_auth.queued_for) and refuses a cold decision that no longer fits in
# ORCID_TIMEOUT + 1 s; bound to a Unix socket, or off Linux, that wait goes unseen.
# Load the app (and the policy) once in the master: a worker that restarts later forks
# from it, so a policy file broken since start-up cannot stop workers from booting.
preload_app = True
# A cold decision may wait on ORCID for up to ORCID_TIMEOUT (8 s by default).
timeout = _number("GUNICORN_TIMEOUT", 30, 1)
graceful_timeout = _number("GUNICORN_GRACEFUL_TIMEOUT", 20, 0)
keepalive = _number("GUNICORN_KEEPALIVE", 5, 0)
# gunicorn takes its C parser, gunicorn_h1c, whenever that is installed (the servers
# benchmark installs it); the suite runs the Python one, so that one unless asked for.
http_parser = os.environ.get("GUNICORN_HTTP_PARSER", "").strip().lower() or "python"
if http_parser not in ("python", "fast", "auto"):
    _problems.append(f"GUNICORN_HTTP_PARSER: {http_parser!r} is not python, fast or auto")
    http_parser = "python"
elif http_parser == "fast" and importlib.util.find_spec("gunicorn_h1c") is None:
    _problems.append("GUNICORN_HTTP_PARSER: fast needs gunicorn_h1c: pip install gunicorn_h1c")
accesslog = os.environ.get("GUNICORN_ACCESSLOG") or None
# Unset: one JSON object per request with named fields (QuerylessAccessLogger.access).
access_log_format = os.environ.get("GUNICORN_ACCESS_LOG_FORMAT") or None
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

    def access(self, resp, req, environ, request_time):
        """One JSON line with named fields, unless GUNICORN_ACCESS_LOG_FORMAT asks for text.

        The app tells who and what through the environ (app/web/access_log.py).
        """
        # NOTE: not access_log_enabled alone: gunicorn counts any logconfig_dict (ours is
        # always set) as asking for access lines, which wrote one per request with
        # GUNICORN_ACCESSLOG unset (about 46 µs of CPU per /auth).
        if self.cfg.accesslog is None or not self.access_log_enabled:
            return
        if self.cfg.access_log_format is not None:
            return super().access(resp, req, environ, request_time)
        self.access_log.info(
            "request",
            extra={
                "method": environ.get("REQUEST_METHOD"),
                "path": environ.get("RAW_URI", "").partition("?")[0],
                "status": _status(resp),
                "duration_ms": round(request_time.total_seconds() * 1000, 3),
                "request_id": request_id(environ),
                "orcid": environ.get(ORCID),
                "dataset": environ.get(DATASET),
            },
        )

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        for name in self.URL_ATOMS:
            if isinstance(atoms.get(name), str):
                atoms[name] = atoms[name].partition("?")[0]
        # Nor any credential: %(u)s is the Basic user name, where `curl -u TOKEN:` puts a
        # personal access token, and headers or environ keys may carry tokens or cookies.
        atoms["u"] = "-"
        for name in atoms:
            if name[:1] == "{" and ("authorization" in name or "cookie" in name):
                atoms[name] = "-"
        path = environ["RAW_URI"].partition("?")[0]
        atoms["r"] = f"{environ['REQUEST_METHOD']} {path} {environ['SERVER_PROTOCOL']}"
        atoms["q"] = atoms["{query_string}e"] = "-"
        return atoms


def _status(resp) -> int | None:
    try:
        return int(str(resp.status).split(None, 1)[0])
    except (ValueError, IndexError):
        return None


logger_class = QuerylessAccessLogger
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")
# One JSON object per line, for our loggers and gunicorn's alike.
logconfig_dict = logging_config(loglevel.upper())
# The app's per-client limits read the same variable (app/web/clients.py); empty is unset.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "").strip() or "127.0.0.1,::1"
# No header may set SCRIPT_NAME or PATH_INFO, whoever sends it. gunicorn's default lets a
# trusted peer (the proxy, on loopback) set SCRIPT_NAME, which it cuts off the path;
# proxies that pass a browser's headers on would let a browser turn /static/metrics into
# /metrics. Nothing is mounted under a prefix here: PUBLIC_URL says where users reach us.
forwarder_headers = ""
# Header names with underscores are dropped (X_Original_URI would read as X-Original-URI):
# gunicorn's default, pinned so that no command-line flag quietly undoes it.
header_map = "drop"
# The scheme comes from X-Forwarded-Proto alone, which every proxy in docs/proxies/ sets;
# gunicorn's default also takes X-Forwarded-Ssl and X-Forwarded-Protocol, which proxies
# pass on from the browser untouched.
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}
# No control socket (gunicorn 25.1+ opens $XDG_RUNTIME_DIR/gunicorn.ctl, else
# $HOME/.gunicorn/gunicorn.ctl, by default): every instance run by one user would share
# that path, each new one taking it over from the last, and the first to stop would
# delete the live one's. Signals do what gunicornc would.
control_socket_disable = True


# Each worker writes its metrics here and /metrics adds them up; it must be set before
# any worker imports prometheus_client. A fresh directory per start: no stale samples.
_own_metrics_dir = None
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _own_metrics_dir = tempfile.mkdtemp(prefix="gatekeeper-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _own_metrics_dir
else:
    # The operator's directory: an earlier run's samples would add to this one's
    # (prometheus_client asks for it to be emptied before each start). One run per
    # directory, then.
    for _stale in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_stale)


def on_exit(server):
    """The metrics directory we made for this run goes with it."""
    if _own_metrics_dir:
        shutil.rmtree(_own_metrics_dir, ignore_errors=True)


def _refuse(message: str):
    """Stop before serving: one line, exit 3, and no metrics directory left behind (gunicorn
    runs no on_exit for a start refused here)."""
    print(f"orcid-gatekeeper: {message}", file=sys.stderr)
    on_exit(None)
    sys.exit(3)


def post_worker_init(worker):
    """Cold decisions take at most all threads but one, so cached checks never queue; the
    worker's own gauges say which policy it serves."""
    from app import metrics

    metrics.worker_started()
    forward_auth = getattr(worker.wsgi, "wsgi_app", None)
    if worker.cfg.threads > 1 and hasattr(forward_auth, "set_cold_slots"):
        forward_auth.set_cold_slots(worker.cfg.threads - 1)


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
        if settings.demo:
            print(
                "orcid-gatekeeper: GATEKEEPER_DEMO is set: demo mode (a SECRET_KEY made up "
                "at each start, plain http allowed); not for a service others rely on",
                file=sys.stderr,
            )
    except PolicyError as exc:
        _refuse(f"POLICY_PATH: {exc.message}")
    except ConfigError as exc:
        _refuse(exc.message)


if _problems:  # a bad GUNICORN_* value: one line, like every other setting
    _refuse("; ".join(_problems))
_check_settings()


# Settings this file pins for safety, as gunicorn ends up with them: GUNICORN_CMD_ARGS and
# the command line come after this file and would otherwise quietly undo them.
PINNED = {
    "forwarder_headers": ([], "a header could move a request onto another route"),
    "header_map": ("drop", "X_Original_URI would read as X-Original-URI"),
    "secure_scheme_headers": (secure_scheme_headers, "a browser could claim https"),
    "proxy_protocol": ("off", "the client address would come from the connection's header"),
    "protocol": ("http", "requests would be read as another protocol"),
    "control_socket_disable": (True, "every instance of a user shares one control socket"),
    "logger_class": (QuerylessAccessLogger, "access lines would keep queries and credentials"),
}


def on_starting(server):
    """The pinned settings hold; more than one worker needs Redis: sessions and decisions
    must be shared."""
    from app.settings import Settings

    undone = [name for name, (value, _) in PINNED.items() if getattr(server.cfg, name) != value]
    if undone:
        name = undone[0]
        _refuse(
            f"{name}: {getattr(server.cfg, name)!r} undoes this service's "
            f"{PINNED[name][0]!r} ({PINNED[name][1]}); drop it from GUNICORN_CMD_ARGS "
            "or the command line"
        )
    settings = Settings.from_env()
    # Demo mode too: a sign-in's state, kept by one worker, is looked for by any other.
    if server.cfg.workers > 1 and not settings.redis_url:
        _refuse(
            f"REDIS_URL: required with {server.cfg.workers} workers "
            "(sessions, decisions and locks must be shared); set it, or run one worker"
        )
