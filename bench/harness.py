"""The benchmark's shared harness: servers on loopback, sign-in, wrk, CPU per request.

Every scenario in bench/scenarios/ is built from these parts:

- ``Processes``: servers started by this run, each stopped by its own pid at the end
  (also on Ctrl-C, SIGTERM or a failure), newest first, with their logs in one folder.
- ``start_stack``: a private redis-server and the ORCID emulator
  (``python -m app.emulator --fixtures bench/fixtures.yaml``).
- ``start_gunicorn``: ``gunicorn -c gunicorn.conf.py APP`` with the gatekeeper's settings.
- ``start_file_server``: nginx serving a small static file (the data portal stand-in).
- ``sign_in`` / ``make_token``: a researcher's session cookie, a personal access token.
- ``run_wrk``: one wrk run through bench/report.lua, with the CPU each watched process
  spent per request (from /proc) and how busy the rest of the machine was.
- ``undisturbed`` / ``wait_for_quiet``: measure again when other work took the cores.

Nothing here leaves 127.0.0.1, and every wait is bounded.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
RESULTS = BENCH / "results"
BIN = Path(sys.executable).parent
FIXTURES = BENCH / "fixtures.yaml"
LUA = BENCH / "report.lua"
NGINX = "/usr/sbin/nginx"

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CLIENT_ID, CLIENT_SECRET = "APP-GATEKEEPERBENCH1", "bench-secret"  # as in fixtures.yaml
QUALIFIED, MANY_ITEMS = "qualified", "many-items"
CANDIDATES = 30  # candidate items on the many-items record (see fixtures.yaml)
DATASET, ORIGINAL_URI = "sail-cohort", "/datasets/sail-cohort/file.csv"
UNPROTECTED_URI = "/public/file.csv"  # the same file, outside every dataset
SESSION_COOKIE = "gatekeeper_session"
SYNC_INTERVAL = 1.0  # app.web.forward_auth.SYNC_INTERVAL: a worker's memory holds this long
RECORD_KINDS = ["qualifications", "qualification", "person"]
FILE_BYTES = 1024  # the size of the static file the proxies serve


class BenchError(Exception):
    """A problem the user can act on: printed as one line, exit 1 (2 for missing tools)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def say(line: str = ""):
    print(line, flush=True)


# --- processes ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, what: str, timeout: float = 20.0):
    """Poll ``check`` until it returns true; bounded by ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except BenchError:
            raise
        except Exception as exc:  # still starting: refused connections and the like
            last = exc
        time.sleep(0.05)
    raise BenchError(f"{what} did not answer within {timeout:.0f}s (last error: {last})")


class Processes:
    """The servers this run started; ``stop_all`` ends each by its own pid, newest first.

    ``on_stop`` registers a callback for a server started elsewhere (the proxies, which
    tests/integration/proxies.py starts), run in the same newest-first order.
    """

    def __init__(self, logs: Path):
        self.logs = logs
        self.running: list[tuple[str, object, object]] = []  # (name, Popen or callback, log)

    def start(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "w")  # closed in stop()
        # A session of its own, so a Ctrl-C in the terminal reaches only this script,
        # which then stops each server in order instead of all of them at once.
        process = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.running.append((name, process, log))
        return process

    def on_stop(self, name: str, callback):
        self.running.append((name, callback, None))

    def check_alive(self, process: subprocess.Popen, name: str):
        if process.poll() is not None:
            raise BenchError(f"{name} exited with {process.returncode}; see {self.logs}/{name}.log")

    def stop(self, process, timeout: float = 25.0):
        for entry in list(self.running):
            if entry[1] is process:
                self.running.remove(entry)
                if isinstance(process, subprocess.Popen):
                    _terminate(process, timeout)
                else:
                    with contextlib.suppress(Exception):
                        process()
                if entry[2] is not None:
                    entry[2].close()

    def stop_all(self):
        while self.running:
            self.stop(self.running[-1][1])


def _terminate(process: subprocess.Popen, timeout: float):
    if process.poll() is None:
        process.terminate()  # gunicorn: graceful stop of its workers; others: exit
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


# --- Redis and the ORCID emulator --------------------------------------------------------


@dataclass
class Stack:
    """The long-lived servers of one scenario: Redis and the ORCID emulator."""

    redis_url: str
    redis: object  # redis.Redis
    emulator_url: str


def start_stack(procs: Processes) -> Stack:
    import redis
    import requests

    redis_port = free_port()
    redis_dir = procs.logs / "redis"
    redis_dir.mkdir(exist_ok=True)
    options = f"--port {redis_port} --bind 127.0.0.1 --appendonly no --dir {redis_dir}"
    server = procs.start("redis", [shutil.which("redis-server"), *options.split(), "--save", ""])
    client = redis.Redis(port=redis_port, decode_responses=True, socket_timeout=2)

    def redis_up():
        procs.check_alive(server, "redis")
        return client.ping()

    wait_until(redis_up, "redis-server")

    emulator_port = free_port()
    options = f"-m app.emulator --port {emulator_port} --fixtures {FIXTURES}"
    emulator = procs.start("emulator", [sys.executable, *options.split()])
    emulator_url = f"http://127.0.0.1:{emulator_port}"

    def emulator_up():
        procs.check_alive(emulator, "emulator")
        return requests.get(f"{emulator_url}/_emulator/requests", timeout=1).ok

    wait_until(emulator_up, "the ORCID emulator")
    return Stack(f"redis://127.0.0.1:{redis_port}/0", client, emulator_url)


def emulator_reset(stack: Stack):
    import requests

    requests.post(f"{stack.emulator_url}/_emulator/reset", timeout=5).raise_for_status()


def emulator_faults(stack: Stack, **settings):
    import requests

    requests.post(
        f"{stack.emulator_url}/_emulator/faults", json=settings, timeout=5
    ).raise_for_status()


def emulator_counts(stack: Stack) -> dict:
    import requests

    return requests.get(f"{stack.emulator_url}/_emulator/requests", timeout=5).json()


def redis_calls(stack: Stack) -> int:
    """Commands Redis has served so far (INFO itself not counted)."""
    stats = stack.redis.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if not k.startswith("cmdstat_info"))


# --- gunicorn -------------------------------------------------------------------------------


@dataclass
class Gunicorn:
    name: str
    app_spec: str
    url: str
    process: subprocess.Popen
    threads: int
    workers: int

    @property
    def command(self) -> str:
        return gunicorn_command(self.app_spec, self.threads, self.workers)

    @property
    def watch(self) -> Watch:
        return Watch(self.process.pid, children_only=True)  # the workers, not the master


def worker_name(threads: int) -> str:
    return "sync" if threads == 1 else f"gthread x{threads}"


def gunicorn_env(
    stack: Stack, port: int, threads: int, workers: int, public_url: str | None = None
) -> dict:
    """The environment every gunicorn gets: the worker settings, the gatekeeper's config."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ORCID_", "GUNICORN_", "REDIS_", "GATEKEEPER_", "WEB_CONCURRENCY"))
    }
    env.update(
        GUNICORN_BIND=f"127.0.0.1:{port}",
        GUNICORN_WORKERS=str(workers),
        GUNICORN_THREADS=str(threads),
        GUNICORN_LOGLEVEL="warning",
        ORCID_BASE_URL=stack.emulator_url,
        ORCID_API_URL=f"{stack.emulator_url}/v3.0",
        ORCID_CLIENT_ID=CLIENT_ID,
        ORCID_CLIENT_SECRET=CLIENT_SECRET,
        POLICY_PATH=str(REPO / "policies"),
        REDIS_URL=stack.redis_url,
        SECRET_KEY="bench-secret-key-0123456789abcdef",
        PUBLIC_URL=public_url or f"http://127.0.0.1:{port}",
    )
    return env


def start_gunicorn(
    procs: Processes,
    stack: Stack,
    name: str,
    app_spec: str = "app:create_app()",
    *,
    threads: int,
    workers: int,
    port: int | None = None,
    public_url: str | None = None,
) -> Gunicorn:
    import requests

    env = gunicorn_env(stack, port or free_port(), threads, workers, public_url)
    url = "http://" + env["GUNICORN_BIND"]
    process = procs.start(name, [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", app_spec], env)

    def up():
        procs.check_alive(process, name)
        # /auth with no cookie: 401 from the gatekeeper, 200 from the bare app.
        return requests.get(f"{url}/auth", timeout=1).status_code in (200, 401)

    wait_until(up, f"gunicorn {app_spec}")
    return Gunicorn(name, app_spec, url, process, threads, workers)


def gunicorn_command(app_spec: str, threads: int, workers: int) -> str:
    return (
        f"GUNICORN_WORKERS={workers} GUNICORN_THREADS={threads} "
        f".venv/bin/gunicorn -c gunicorn.conf.py '{app_spec}'"
    )


def auth_checks(gatekeeper_url: str) -> float:
    """``/auth`` answers the gatekeeper has given so far, all workers (from /metrics)."""
    import requests

    text = requests.get(f"{gatekeeper_url}/metrics", timeout=5).text
    found = re.search(r"^gatekeeper_auth_request_seconds_count(?:\{\})? (\S+)$", text, re.M)
    if found is None:
        raise BenchError("the gatekeeper's /metrics has no gatekeeper_auth_request_seconds_count")
    return float(found.group(1))


# --- signing in, tokens ---------------------------------------------------------------------


def sign_in(base_url: str, persona: str):
    """Walk /login -> emulator (persona shortcut) -> /callback.

    Returns (the session cookie's value, the ``requests.Session`` that holds it).
    """
    import requests

    browser = requests.Session()
    response = browser.get(f"{base_url}/login", allow_redirects=False, timeout=10)
    if response.status_code != 302:
        raise BenchError(f"/login answered {response.status_code}, not a redirect to ORCID")
    response = browser.get(
        response.headers["Location"],
        params={"persona": persona, "decision": "authorize"},
        allow_redirects=False,
        timeout=10,
    )
    if response.status_code not in (302, 303):
        raise BenchError(f"the emulator refused to sign in {persona!r}: {response.text[:200]}")
    response = browser.get(response.headers["Location"], allow_redirects=False, timeout=10)
    cookie = browser.cookies.get(SESSION_COOKIE)
    if response.status_code != 302 or not cookie:
        raise BenchError(f"/callback answered {response.status_code} without a session cookie")
    return cookie, browser


def make_token(base_url: str, browser, name: str = "bench", days: int = 90) -> str:
    """A personal access token (``gkpat_...``) for the researcher ``browser`` is signed in as."""
    page = browser.get(f"{base_url}/tokens", allow_redirects=False, timeout=10)
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    if page.status_code != 200 or found is None:
        raise BenchError(f"GET /tokens answered {page.status_code} without a form to fill in")
    made = browser.post(
        f"{base_url}/tokens",
        data={"csrf": found.group(1), "name": name, "days": str(days)},
        allow_redirects=False,
        timeout=10,
    )
    token = re.search(r'value="(gkpat_[0-9A-Za-z]+)"', made.text)
    if made.status_code != 201 or token is None:
        raise BenchError(f"POST /tokens answered {made.status_code} without a token")
    return token.group(1)


def auth_headers(cookie: str) -> dict:
    return {"Cookie": f"{SESSION_COOKIE}={cookie}", "X-Original-URI": ORIGINAL_URI}


def bearer_headers(token: str) -> dict:
    return {"Authorization": f"Bearer {token}", "X-Original-URI": ORIGINAL_URI}


def check_allowed(url: str, headers: dict, what: str):
    """``GET url`` (``/auth`` when url is a server's root) must answer 200."""
    import requests

    target = url if url.count("/") > 2 else f"{url}/auth"
    response = requests.get(target, headers=headers, timeout=30, allow_redirects=False)
    if response.status_code != 200:
        raise BenchError(f"{what}: GET {target} answered {response.status_code}, not 200")
    return response


# --- the file server ----------------------------------------------------------------------


@dataclass
class FileServer:
    url: str
    port: int
    process: subprocess.Popen
    content: bytes

    @property
    def watch(self) -> Watch:
        return Watch(self.process.pid)


def nginx_temp_paths(folder: Path) -> str:
    """nginx's temp paths inside ``folder`` (not /var/lib/nginx), as http-context lines."""
    return "".join(
        f"    {kind}_temp_path {folder}/{kind}_temp;\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )


def start_file_server(procs: Processes) -> FileServer:
    """nginx serving one small file at ORIGINAL_URI and UNPROTECTED_URI, on loopback.

    It stands for the data portal behind the proxy. nginx rather than Python, so the file
    server costs little next to the proxy and the check.
    """
    import requests

    if not Path(NGINX).exists():
        raise BenchError(f"{NGINX} not found; install with `apt-get install -y nginx`", code=2)
    folder = procs.logs / "files"
    root = folder / "root"
    line = b"id,value\n" + b"".join(b"%06d,%s\n" % (n, b"x" * 24) for n in range(100))
    content = line[:FILE_BYTES]
    for path in (ORIGINAL_URI, UNPROTECTED_URI):
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    port = free_port()
    config = folder / "nginx.conf"
    config.write_text(
        "daemon off;\n"
        "worker_processes auto;\n"
        f"pid {folder}/nginx.pid;\n"
        f"error_log {procs.logs}/files.log warn;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        "    access_log off;\n"
        "    server_tokens off;\n"
        "    types { text/csv csv; }\n"
        f"{nginx_temp_paths(folder)}"
        f"    server {{ listen 127.0.0.1:{port}; root {root}; }}\n"
        "}\n"
    )
    process = procs.start(
        "files", [NGINX, "-p", str(folder), "-c", str(config), "-e", f"{procs.logs}/files.log"]
    )
    url = f"http://127.0.0.1:{port}"

    def up():
        procs.check_alive(process, "files")
        return requests.get(url + UNPROTECTED_URI, timeout=1).content == content

    wait_until(up, "the file server (nginx)")
    return FileServer(url, port, process, content)


# --- CPU accounting ------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Watch:
    """A server whose CPU is counted: ``pid`` and its children (only these, if asked)."""

    pid: int
    children_only: bool = False


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat.

    Busy is user, nice and system time: interrupt time is left out, as most of it is
    the loopback traffic of the benchmark itself and no process is charged for it.
    """
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return sum(fields[:3]) / TICK, sum(fields[:8]) / TICK


def _own_cpu(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / TICK


def cpu_snapshot(watch: Watch) -> dict[int, float]:
    """CPU seconds so far of each process ``watch`` covers, by pid."""
    found = {}
    pids = [] if watch.children_only else [watch.pid]
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{watch.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                pids += [int(p) for p in (task / "children").read_text().split()]
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            found[pid] = _own_cpu(pid)
    return found


def cpu_spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds between two snapshots; a process new since ``before`` counts in full."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def wait_for_quiet(limit: float, max_cores: float):
    """Wait (at most ``limit`` seconds) until other work keeps under ``max_cores`` busy."""
    deadline = time.monotonic() + limit
    told = 0.0
    while True:
        busy0, _ = machine_cpu()
        time.sleep(2)
        cores = (machine_cpu()[0] - busy0) / 2
        if cores <= max_cores:
            return
        if time.monotonic() >= deadline:
            say(f"warning: other work keeps {cores:.2f} cores busy; figures will be low")
            return
        if time.monotonic() - told >= 30:
            told = time.monotonic()
            say(f"other work keeps {cores:.2f} cores busy; waiting for it to settle")


# --- wrk --------------------------------------------------------------------------------


@dataclass
class WrkResult:
    command: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: dict
    p99_from_schedule_ms: float | None = None
    p50_from_schedule_ms: float | None = None
    statuses: dict = field(default_factory=dict)
    cpu_us: dict = field(default_factory=dict)  # watched server -> its CPU per request
    wrk_cores: float = 0.0  # cores wrk kept busy
    other_cores: float = 0.0  # cores busy with anything but the watched servers and wrk
    extra: dict = field(default_factory=dict)  # what a scenario adds (Redis calls...)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def as_dict(self) -> dict:
        return {
            "command": self.command,
            "rps": self.rps,
            "requests": self.requests,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "p50_from_schedule_ms": self.p50_from_schedule_ms,
            "p99_from_schedule_ms": self.p99_from_schedule_ms,
            "errors": self.errors,
            "cpu_us_per_request": self.cpu_us,
            "wrk_cores": self.wrk_cores,
            "other_cores": self.other_cores,
            **self.extra,
        }


def run_wrk(
    url: str,
    headers: dict,
    *,
    threads: int,
    connections: int,
    seconds: float,
    rate: float | None = None,
    watch: dict[str, Watch] | None = None,
) -> WrkResult:
    """One wrk run against ``url``; ``rate``: paced (Poisson) at that many req/s.

    ``url`` without a path means the server's ``/auth``. For each server in ``watch``,
    also the CPU it spent per request, and how much CPU wrk and everything else on the
    machine took meanwhile. Every answer must be 2xx or 3xx.
    """
    if url.count("/") < 3:
        url += "/auth"
    watch = watch or {}
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s"]
    argv += ["-s", str(LUA)]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(url)
    if rate is not None:
        argv += ["--", f"{rate:.0f}", str(threads)]
    shown = " ".join(shell_word(a) for a in argv)
    before = {name: cpu_snapshot(w) for name, w in watch.items()}
    machine_before = machine_cpu()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.monotonic()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish: {shown}") from None
    wall = time.monotonic() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    spent = {name: cpu_spent(before[name], cpu_snapshot(w)) for name, w in watch.items()}
    machine_busy = machine_cpu()[0] - machine_before[0]
    match = re.search(r"^BENCH (\{.*\})$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or match is None:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout}")
    data = json.loads(match.group(1))
    latency = data["latency_us"]
    result = WrkResult(
        command=shown,
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=latency["p50"] / 1000,
        p99_ms=latency["p99"] / 1000,
        errors={k: v for k, v in data["errors"].items() if v},
    )
    result.wrk_cores = wrk_cpu / wall
    result.cpu_us = {name: s / max(result.requests, 1) * 1e6 for name, s in spent.items()}
    if watch:
        result.other_cores = max(0.0, machine_busy - sum(spent.values()) - wrk_cpu) / wall
    if "latency_from_schedule_us" in data:
        result.p50_from_schedule_ms = data["latency_from_schedule_us"]["p50"] / 1000
        result.p99_from_schedule_ms = data["latency_from_schedule_us"]["p99"] / 1000
        result.statuses = data.get("statuses", {})
    if result.errors.get("status"):
        raise BenchError(f"{result.errors['status']} answers were not 2xx/3xx: {shown}")
    if result.requests == 0:
        raise BenchError(f"wrk completed no request: {shown}")
    return result


def shell_word(arg: str) -> str:
    """``arg`` as it would be typed, with credentials and ports left out, paths relative."""
    if arg.startswith("Cookie: "):
        return "'Cookie: gatekeeper_session=...'"
    if arg.startswith("Authorization: "):
        return "'Authorization: Bearer gkpat_...'"
    arg = arg.replace(str(REPO) + "/", "")
    arg = re.sub(r"^http://127\.0\.0\.1:\d+", "http://127.0.0.1:PORT", arg)
    return f"'{arg}'" if re.search(r"[\s;]", arg) else arg


def undisturbed(measure, args, label: str) -> tuple[WrkResult, ...]:
    """Run ``measure`` until other work on the machine stays out of it (bounded by --retries).

    Another process taking CPU during a run lowers throughput and stretches the tail,
    so a run during which anything else kept more than --max-other cores busy is run
    again after the machine settles; after the last retry the least disturbed is kept.
    """
    best = None
    for attempt in range(args.retries + 1):
        wait_for_quiet(args.wait_quiet, args.max_other)
        runs = measure()
        other = max(r.other_cores for r in runs)
        if best is None or other < best[0]:
            best = (other, runs)
        if other <= args.max_other:
            break
        if attempt < args.retries:
            say(f"{label}: other work kept {other:.2f} cores busy; running it again")
    if best[0] > args.max_other:
        say(f"warning: {label}: other work kept {best[0]:.2f} cores busy in every attempt")
    return best[1]


def median_of(results: list[WrkResult], attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in results)


def median_cpu(results: list[WrkResult], name: str) -> float | None:
    values = [r.cpu_us[name] for r in results if name in r.cpu_us]
    return statistics.median(values) if values else None


def disturbed(results: list[WrkResult], args) -> bool:
    return max(r.other_cores for r in results) > args.max_other


# --- the machine, and the report ------------------------------------------------------------


def machine_date() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="minutes")


def machine() -> dict:
    from importlib.metadata import version

    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        found = re.search(
            r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE
        )
        cpu = found.group(1) if found else cpu
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    redis_version = subprocess.run(
        [shutil.which("redis-server"), "--version"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "date": machine_date(),
        "cpu": f"{os.cpu_count()} x {cpu}",
        "os": platform.platform(),
        "python": platform.python_version(),
        "gunicorn": version("gunicorn"),
        "flask": version("flask"),
        "wrk": wrk.split(" Copyright")[0],
        "redis": redis_version.split(" sha=")[0],
    }


def table(header: list[str], rows: list[list], align: str | None = None) -> str:
    """A markdown table; ``align``: one letter per column, l or r (default: l, then r)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = [header, rule, *rows]
    return "\n".join("| " + " | ".join(str(c) for c in line) + " |" for line in lines)


def num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} ms"


def us(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f} µs"


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


@dataclass
class Report:
    """What a scenario hands back: its markdown (table and notes) and every figure."""

    markdown: str
    data: dict
    ok: bool = True  # every target the scenario holds itself to was met


@dataclass
class Context:
    """What a scenario gets: the options, the process registry, and the run's folder."""

    args: object
    procs: Processes
    info: dict

    @property
    def logs(self) -> Path:
        return self.procs.logs

    def wait_quiet(self):
        wait_for_quiet(self.args.wait_quiet, self.args.max_other)

    def threads(self, default: list[int]) -> list[int]:
        return self.args.threads or default
