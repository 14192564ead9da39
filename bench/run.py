"""Benchmark the cached ``GET /auth`` against a bare Flask endpoint, and time a cold decision.

    .venv/bin/python bench/run.py                 # both worker classes, ~6 minutes
    .venv/bin/python bench/run.py --quick         # a smoke run, ~2 minutes

Everything runs on this machine, on free loopback ports: a private redis-server, the
ORCID emulator (``python -m app.emulator`` with bench/fixtures.yaml), and for each worker
setting two gunicorns started with the repository's gunicorn.conf.py: the gatekeeper
(``app:create_app()``) and the baseline (``bench.bare_app:create_app()``). wrk loads
them through bench/report.lua. Every process is stopped at the end, also on Ctrl-C or a
failure. Installs nothing: a missing ``wrk`` or ``redis-server`` is one line and exit 2.

What is measured, and how to read it: bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
BIN = Path(sys.executable).parent
FIXTURES = BENCH / "fixtures.yaml"
LUA = BENCH / "report.lua"

sys.path.insert(0, str(REPO))  # `python bench/run.py` puts bench/, not the repo, on the path

CLIENT_ID, CLIENT_SECRET = "APP-GATEKEEPERBENCH1", "bench-secret"  # as in fixtures.yaml
QUALIFIED, MANY_ITEMS = "qualified", "many-items"
CANDIDATES = 30  # candidate items on the many-items record (see fixtures.yaml)
DATASET, ORIGINAL_URI = "sail-cohort", "/datasets/sail-cohort/file.csv"
SESSION_COOKIE = "gatekeeper_session"
SYNC_INTERVAL = 1.0  # app.web.forward_auth.SYNC_INTERVAL: a worker's memory holds this long
RECORD_KINDS = ["qualifications", "qualification", "person"]

# The targets.
TARGET_RATIO = 0.80
TARGET_P99_MS = 5.0
ROUND_TRIP_MS = 50


class BenchError(Exception):
    """A problem the user can act on: printed as one line, exit 1 (2 for missing tools)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


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
        except Exception as exc:  # still starting: refused connections and the like
            last = exc
        time.sleep(0.05)
    raise BenchError(f"{what} did not answer within {timeout:.0f}s (last error: {last})")


class Processes:
    """The servers this run started; ``stop_all`` ends each by its own pid, newest first."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.running: list[tuple[str, subprocess.Popen, object]] = []

    def start(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "w")  # closed in stop()
        # A session of its own, so a Ctrl-C in the terminal reaches only this script,
        # which then stops each server in order instead of all of them at once.
        process = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.running.append((name, process, log))
        return process

    def check_alive(self, process: subprocess.Popen, name: str):
        if process.poll() is not None:
            raise BenchError(f"{name} exited with {process.returncode}; see {self.logs}/{name}.log")

    def stop(self, process: subprocess.Popen, timeout: float = 25.0):
        for entry in list(self.running):
            if entry[1] is process:
                self.running.remove(entry)
                _terminate(process, timeout)
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


# --- the servers ----------------------------------------------------------------------


@dataclass
class Stack:
    """The long-lived servers of one run: Redis and the ORCID emulator."""

    redis_url: str
    redis: object  # redis.Redis
    emulator_url: str


def start_stack(procs: Processes) -> Stack:
    import redis
    import requests

    redis_port = free_port()
    redis_dir = procs.logs / "redis"
    redis_dir.mkdir()
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


def gunicorn_env(stack: Stack, port: int, threads: int, workers: int) -> dict:
    """The environment both gunicorns get: the same worker settings, the gatekeeper's config."""
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
        PUBLIC_URL=f"http://127.0.0.1:{port}",
    )
    return env


def start_gunicorn(procs: Processes, name: str, app_spec: str, env: dict) -> tuple[str, object]:
    import requests

    url = "http://" + env["GUNICORN_BIND"]
    process = procs.start(name, [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", app_spec], env)

    def up():
        procs.check_alive(process, name)
        # /auth with no cookie: 401 from the gatekeeper, 200 from the bare app.
        return requests.get(f"{url}/auth", timeout=1).status_code in (200, 401)

    wait_until(up, f"gunicorn {app_spec}")
    return url, process


def gunicorn_command(app_spec: str, threads: int, workers: int) -> str:
    return (
        f"GUNICORN_WORKERS={workers} GUNICORN_THREADS={threads} "
        f".venv/bin/gunicorn -c gunicorn.conf.py '{app_spec}'"
    )


# --- the emulator's control API ---------------------------------------------------------


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


# --- signing in ---------------------------------------------------------------------------


def sign_in(base_url: str, persona: str) -> str:
    """Walk /login -> emulator (persona shortcut) -> /callback; the session cookie's value."""
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
    return cookie


def auth_headers(cookie: str) -> dict:
    return {"Cookie": f"{SESSION_COOKIE}={cookie}", "X-Original-URI": ORIGINAL_URI}


def check_allowed(url: str, headers: dict, what: str):
    import requests

    response = requests.get(f"{url}/auth", headers=headers, timeout=30)
    if response.status_code != 200:
        raise BenchError(f"{what}: GET /auth answered {response.status_code}, not 200")
    return response


# --- CPU accounting ------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat.

    Busy is user, nice and system time: interrupt time is left out, as most of it is
    the loopback traffic of the benchmark itself and no process is charged for it.
    """
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return sum(fields[:3]) / TICK, sum(fields[:8]) / TICK


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) used so far by ``pid`` and its children."""

    def own(p):
        stat = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(stat[11]) + int(stat[12])) / TICK

    total = 0.0
    with contextlib.suppress(OSError):
        total += own(pid)
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            with contextlib.suppress(OSError):
                total += own(int(child))
    return total


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
    server_cpu_us: float | None = None  # gunicorn workers' CPU per request
    wrk_cores: float = 0.0  # cores wrk kept busy
    other_cores: float = 0.0  # cores busy with anything but the server and wrk

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def run_wrk(
    url: str,
    headers: dict,
    *,
    threads: int,
    connections: int,
    seconds: float,
    rate: float | None = None,
    server: subprocess.Popen | None = None,
) -> WrkResult:
    """One wrk run against ``url``/auth; ``rate``: paced (Poisson) at that many req/s.

    With ``server`` (the gunicorn master), also the CPU its workers spent per request,
    and how much CPU wrk and everything else on the machine took meanwhile.
    """
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s"]
    argv += ["-s", str(LUA)]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(f"{url}/auth")
    if rate is not None:
        argv += ["--", f"{rate:.0f}", str(threads)]
    shown = " ".join(_shell_word(a) for a in argv)
    server_before = process_cpu(server.pid) if server else 0.0
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
    server_cpu = (process_cpu(server.pid) - server_before) if server else 0.0
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
    if server is not None:
        result.server_cpu_us = server_cpu / max(result.requests, 1) * 1e6
        result.other_cores = max(0.0, machine_busy - server_cpu - wrk_cpu) / wall
    if "latency_from_schedule_us" in data:
        result.p50_from_schedule_ms = data["latency_from_schedule_us"]["p50"] / 1000
        result.p99_from_schedule_ms = data["latency_from_schedule_us"]["p99"] / 1000
        result.statuses = data.get("statuses", {})
    if result.errors.get("status"):
        raise BenchError(f"{result.errors['status']} answers were not 2xx/3xx: {shown}")
    return result


def _shell_word(arg: str) -> str:
    """``arg`` as it would be typed, with the session cookie left out and paths relative."""
    if arg.startswith("Cookie: "):
        return "'Cookie: gatekeeper_session=...'"
    arg = arg.replace(str(REPO) + "/", "")
    return f"'{arg}'" if re.search(r"[\s;]", arg) else arg


# --- the measurements ---------------------------------------------------------------------


@dataclass
class ConfigResult:
    name: str
    threads: int
    workers: int
    bare: list[WrkResult] = field(default_factory=list)
    auth: list[WrkResult] = field(default_factory=list)
    redis_calls_per_auth: float | None = None
    half_method: str = ""
    half_auth: WrkResult | None = None
    half_bare: WrkResult | None = None
    quarter_auth: WrkResult | None = None  # paced runs only: /auth at a quarter of its peak
    cold: dict = field(default_factory=dict)  # added latency (ms) -> (times in ms, counts)


def median_of(results: list[WrkResult], attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in results)


def redis_calls(stack: Stack) -> int:
    """Commands Redis has served so far (INFO itself not counted)."""
    stats = stack.redis.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if not k.startswith("cmdstat_info"))


def measure_config(procs: Processes, stack: Stack, args, threads: int) -> ConfigResult:
    name = "sync" if threads == 1 else f"gthread x{threads}"
    result = ConfigResult(name, threads, args.workers)
    say(f"\n== {name}: {args.workers} workers, GUNICORN_THREADS={threads} ==")
    wait_for_quiet(args.wait_quiet, args.max_other)
    stack.redis.flushall()
    emulator_reset(stack)
    gk_env = gunicorn_env(stack, free_port(), threads, args.workers)
    bare_env = gunicorn_env(stack, free_port(), threads, args.workers)
    gk_url, gk_process = start_gunicorn(procs, f"gatekeeper-{threads}", "app:create_app()", gk_env)
    bare_url, bare_process = start_gunicorn(
        procs, f"bare-{threads}", "bench.bare_app:create_app()", bare_env
    )
    try:
        headers = auth_headers(sign_in(gk_url, QUALIFIED))
        allowed = check_allowed(gk_url, headers, "the qualified researcher")
        say(f"signed in as {allowed.headers.get('X-Orcid-Id')}; /auth answers 200; warming up")
        for _ in range(40):  # every worker memorises the answer
            check_allowed(gk_url, headers, "warm-up")
        wrk = dict(threads=args.wrk_threads, connections=args.connections)
        for url in (bare_url, gk_url):
            run_wrk(url, headers, seconds=args.warmup, **wrk)

        for round_ in range(1, args.rounds + 1):

            def pair():
                bare = run_wrk(bare_url, headers, seconds=args.duration, server=bare_process, **wrk)
                before = redis_calls(stack)
                auth = run_wrk(gk_url, headers, seconds=args.duration, server=gk_process, **wrk)
                result.redis_calls_per_auth = (redis_calls(stack) - before) / auth.requests
                return bare, auth

            bare, auth = undisturbed(pair, args, f"round {round_}")
            result.bare.append(bare)
            result.auth.append(auth)
            say(
                f"round {round_}: bare {bare.rps:6.0f} req/s, p50 {bare.p50_ms:.2f} ms, p99 "
                f"{bare.p99_ms:.2f} ms | /auth {auth.rps:6.0f} req/s, p50 {auth.p50_ms:.2f} ms, "
                f"p99 {auth.p99_ms:.2f} ms | ratio {auth.rps / bare.rps:.0%}"
            )
            say(
                f"         worker CPU per request: bare {bare.server_cpu_us:.0f} us, /auth "
                f"{auth.server_cpu_us:.0f} us; wrk {bare.wrk_cores:.2f}/{auth.wrk_cores:.2f} "
                f"cores; other work {bare.other_cores:.2f}/{auth.other_cores:.2f} cores; "
                f"Redis calls per /auth {result.redis_calls_per_auth:.4f}"
            )

        result.half_auth, result.half_bare = half_load(
            (gk_url, gk_process), (bare_url, bare_process), headers, result, args
        )
        for label, run, peak in (
            ("/auth", result.half_auth, result.auth),
            ("bare", result.half_bare, result.bare),
        ):
            say(
                f"half load {label} ({result.half_method}): {run.rps:.0f} req/s "
                f"({run.rps / median_of(peak, 'rps'):.0%} of peak), p50 {run.p50_ms:.2f} ms, "
                f"p99 {run.p99_ms:.2f} ms"
                + (
                    f" from send, {run.p99_from_schedule_ms:.2f} ms from schedule"
                    if run.p99_from_schedule_ms is not None
                    else ""
                )
                + f"; other work {run.other_cores:.2f} cores"
            )
        if (run := result.quarter_auth) is not None:
            say(
                f"quarter load /auth: {run.rps:.0f} req/s, p50 {run.p50_ms:.2f} ms, p99 "
                f"{run.p99_ms:.2f} ms from send, {run.p99_from_schedule_ms:.2f} ms from schedule"
            )

        cookie = sign_in(gk_url, MANY_ITEMS)  # signed in before any latency is added
        for latency in (0, args.latency_ms):
            result.cold[latency] = cold_decisions(stack, gk_url, cookie, latency, args.cold)
    finally:
        procs.stop(bare_process)
        procs.stop(gk_process)
    return result


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


def half_load(gk, bare, headers, result: ConfigResult, args):
    """p99 at about half of each endpoint's peak: (auth run, bare run).

    Keep-alive (gthread): Poisson arrivals at half the measured peak, paced by
    report.lua. Sync: gunicorn's sync worker holds a closed connection until the client
    closes too, and wrk can only pause while holding one (see report.lua), so the load is
    one closed-loop connection instead: one request in flight, no queueing at all.
    """
    (gk_url, gk_process), (bare_url, bare_process) = gk, bare
    if result.threads == 1:
        result.half_method = "1 closed-loop connection"
        load = dict(threads=1, connections=1, seconds=args.duration)
        auth_rate = bare_rate = None
    else:
        result.half_method = "Poisson arrivals at half of its peak"
        load = dict(
            threads=args.paced_connections,
            connections=args.paced_connections,
            seconds=args.duration,
        )
        auth_rate = median_of(result.auth, "rps") / 2
        bare_rate = median_of(result.bare, "rps") / 2
    auth = undisturbed(
        lambda: (run_wrk(gk_url, headers, rate=auth_rate, server=gk_process, **load),),
        args,
        "half load /auth",
    )[0]
    bare = undisturbed(
        lambda: (run_wrk(bare_url, headers, rate=bare_rate, server=bare_process, **load),),
        args,
        "half load bare",
    )[0]
    if auth_rate is not None:  # where the tail stands at a lighter load
        result.quarter_auth = undisturbed(
            lambda: (run_wrk(gk_url, headers, rate=auth_rate / 2, server=gk_process, **load),),
            args,
            "quarter load /auth",
        )[0]
    return auth, bare


def cold_decisions(
    stack: Stack, gk_url: str, cookie: str, latency: int, count: int
) -> tuple[list[float], dict]:
    """Time ``count`` cold /auth checks of the many-items record, ORCID ``latency`` ms away.

    Before each: the cached decisions are deleted from Redis, and the workers' memories
    are left to lapse (SYNC_INTERVAL), so the check reads ORCID again.
    """
    import requests

    headers = auth_headers(cookie)
    emulator_reset(stack)
    emulator_faults(stack, latency_ms=latency, endpoints=RECORD_KINDS)
    times = []
    for _ in range(count):
        decisions = list(stack.redis.scan_iter(match="gk:*:d:*", count=1000))
        if decisions:
            stack.redis.delete(*decisions)
        time.sleep(SYNC_INTERVAL + 0.1)
        start = time.perf_counter()
        response = requests.get(f"{gk_url}/auth", headers=headers, timeout=30)
        times.append((time.perf_counter() - start) * 1000)
        if response.status_code != 200:
            raise BenchError(f"cold /auth for {MANY_ITEMS} answered {response.status_code}")
    counts = emulator_counts(stack)
    emulator_reset(stack)
    say(
        f"cold /auth, {CANDIDATES} candidates, ORCID +{latency} ms: median "
        f"{statistics.median(times):.0f} ms (min {min(times):.0f}, max {max(times):.0f}); "
        f"ORCID requests over {count} checks: {_counts(counts)}"
    )
    return times, counts


def cold_client(stack: Stack, latency: int, count: int) -> tuple[list[float], dict]:
    """Time ``OrcidClient.read_qualifications`` alone against the emulator."""
    from app.orcid_client import OrcidClient
    from app.policy import load_policy

    policy = load_policy(REPO / "policies")
    dataset = policy.dataset(DATASET)
    orcid = _persona_orcid(MANY_ITEMS)
    client = OrcidClient(f"{stack.emulator_url}/v3.0", base_url=stack.emulator_url)
    emulator_reset(stack)
    emulator_faults(stack, latency_ms=latency, endpoints=RECORD_KINDS)
    times, read = [], 0
    try:
        for _ in range(count):
            start = time.perf_counter()
            items = client.read_qualifications(orcid, lambda q: policy.is_candidate(dataset, q))
            times.append((time.perf_counter() - start) * 1000)
            read = len(items)
    finally:
        client.close()
    counts = emulator_counts(stack)
    emulator_reset(stack)
    say(
        f"OrcidClient.read_qualifications alone, ORCID +{latency} ms ({read} items read): "
        f"median {statistics.median(times):.0f} ms (min {min(times):.0f}, max "
        f"{max(times):.0f}); ORCID requests over {count} reads: {_counts(counts)}"
    )
    return times, counts


def _persona_orcid(key: str) -> str:
    from app.emulator.personas import load_fixtures

    return load_fixtures(FIXTURES).persona(key).orcid


def _counts(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "none"


# --- the report -----------------------------------------------------------------------------


def say(line: str):
    print(line, flush=True)


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
        "date": dt.datetime.now().astimezone().isoformat(timespec="minutes"),
        "cpu": f"{os.cpu_count()} x {cpu}",
        "os": platform.platform(),
        "python": platform.python_version(),
        "gunicorn": version("gunicorn"),
        "flask": version("flask"),
        "wrk": wrk.split(" Copyright")[0],
        "redis": redis_version.split(" sha=")[0],
    }


def report(info: dict, args, configs: list[ConfigResult], client: dict):
    say("\n" + "=" * 78)
    say(f"{info['date']}  {info['cpu']}  {info['os']}")
    say(
        f"Python {info['python']}, gunicorn {info['gunicorn']}, Flask {info['flask']}, "
        f"{info['wrk']}, {info['redis']}"
    )
    say(
        f"peak: wrk -t{args.wrk_threads} -c{args.connections} -d{args.duration:g}s, median of "
        f"{args.rounds} alternating rounds; half load: see 'how' and bench/README.md"
    )
    say("")
    say(
        f"{'workers':<22}{'endpoint':<14}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'CPU us/req':>11}   {'half load: req/s':>16}{'p99 ms':>8}{'(sched.)':>10}  how"
    )
    verdicts = []
    for c in configs:
        for label, runs, half in (
            ("bare Flask", c.bare, c.half_bare),
            ("cached /auth", c.auth, c.half_auth),
        ):
            say(
                f"{c.name + f', {c.workers} workers':<22}{label:<14}"
                f"{median_of(runs, 'rps'):>8.0f}{median_of(runs, 'p50_ms'):>9.2f}"
                f"{median_of(runs, 'p99_ms'):>9.2f}{median_of(runs, 'server_cpu_us'):>11.0f}   "
                f"{half.rps:>16.0f}{half.p99_ms:>8.2f}"
                f"{_ms(half.p99_from_schedule_ms):>10}  {c.half_method}"
                + (
                    " (disturbed)"
                    if max(r.other_cores for r in [*runs, half]) > args.max_other
                    else ""
                )
            )
        ratio = median_of(c.auth, "rps") / median_of(c.bare, "rps")
        p99 = c.half_auth.p99_from_schedule_ms or c.half_auth.p99_ms
        quarter = (
            f"; at a quarter of peak ({c.quarter_auth.rps:.0f} req/s) "
            f"{c.quarter_auth.p99_from_schedule_ms:.2f} ms"
            if c.quarter_auth is not None
            else ""
        )
        say(
            f"{'':<22}ratio /auth / bare: {ratio:.0%} (target >= {TARGET_RATIO:.0%}: "
            f"{_met(ratio >= TARGET_RATIO)}); p99 at half load {p99:.2f} ms (target <= "
            f"{TARGET_P99_MS:g} ms: {_met(p99 <= TARGET_P99_MS)}){quarter}"
        )
        trips, cold = (
            _round_trips(c.cold, args.latency_ms),
            statistics.median(c.cold[args.latency_ms][0]),
        )
        say(
            f"{'':<22}cold /auth, {CANDIDATES} candidates: median {cold:.0f} ms with ORCID "
            f"+{args.latency_ms} ms, {statistics.median(c.cold[0][0]):.0f} ms with +0 ms; "
            f"ORCID's latency cost {trips:.1f} round trips (target 2: {_met(trips < 3)}); "
            f"ORCID requests per check: {_per(c.cold[args.latency_ms][1], args.cold)}"
        )
        verdicts += [ratio >= TARGET_RATIO, p99 <= TARGET_P99_MS, trips < 3]
    say(
        f"OrcidClient.read_qualifications alone: median "
        f"{statistics.median(client[args.latency_ms][0]):.0f} ms with ORCID +{args.latency_ms} "
        f"ms, {statistics.median(client[0][0]):.0f} ms with +0 ms; ORCID's latency cost "
        f"{_round_trips(client, args.latency_ms):.1f} round trips; ORCID requests per read: "
        f"{_per(client[args.latency_ms][1], args.cold)}"
    )
    say("\ncommands:")
    for c in configs:
        say(f"  {gunicorn_command('app:create_app()', c.threads, c.workers)}")
        say(f"  {gunicorn_command('bench.bare_app:create_app()', c.threads, c.workers)}")
        say(f"  {c.auth[0].command}")
        say(f"  {c.half_auth.command}")
    return all(verdicts)


def _round_trips(cold: dict, latency: int) -> float:
    """How many round trips ORCID's added latency cost: (median at +latency - at +0) / latency."""
    return (statistics.median(cold[latency][0]) - statistics.median(cold[0][0])) / latency


def _per(counts: dict, n: int) -> str:
    return ", ".join(f"{k} {v / n:g}" for k, v in counts.items() if v) or "none"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def write_json(path: Path, info, args, configs, client: dict):
    def runs(items):
        return [
            {
                "command": r.command,
                "rps": r.rps,
                "p50_ms": r.p50_ms,
                "p99_ms": r.p99_ms,
                "p50_from_schedule_ms": r.p50_from_schedule_ms,
                "p99_from_schedule_ms": r.p99_from_schedule_ms,
                "errors": r.errors,
                "server_cpu_us_per_request": r.server_cpu_us,
                "wrk_cores": r.wrk_cores,
                "other_cores": r.other_cores,
            }
            for r in items
        ]

    data = {
        "machine": info,
        "args": vars(args),
        "configs": [
            {
                "name": c.name,
                "threads": c.threads,
                "workers": c.workers,
                "bare": runs(c.bare),
                "auth": runs(c.auth),
                "redis_calls_per_auth": c.redis_calls_per_auth,
                "half_method": c.half_method,
                "half_auth": runs([c.half_auth])[0],
                "half_bare": runs([c.half_bare])[0],
                "quarter_auth": runs([c.quarter_auth])[0] if c.quarter_auth else None,
                "cold": {str(k): {"ms": v[0], "orcid_requests": v[1]} for k, v in c.cold.items()},
            }
            for c in configs
        ],
        "client": {str(k): {"ms": v[0], "orcid_requests": v[1]} for k, v in client.items()},
    }
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


# --- main -----------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--threads",
        default="1,4",
        help="GUNICORN_THREADS values to try, comma-separated: 1 is the sync "
        "worker, more is gthread (default: 1,4; 4 is the repo's default)",
    )
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default: 2)")
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of wrk warm-up")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="alternating bare / auth peak rounds; the median is reported",
    )
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--paced-connections",
        type=int,
        default=16,
        help="wrk threads = connections for the half-load run",
    )
    parser.add_argument("--cold", type=int, default=10, help="cold decisions to time")
    parser.add_argument(
        "--latency-ms",
        type=int,
        default=ROUND_TRIP_MS,
        help="latency the emulator adds to each record read",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=300,
        help="seconds to wait, before each worker setting, for other work on "
        "the machine to settle (default: 300)",
    )
    parser.add_argument(
        "--max-other",
        type=float,
        default=0.15,
        help="cores other work may take during a run before it is run again (default: 0.15)",
    )
    parser.add_argument(
        "--retries", type=int, default=3, help="times a disturbed run is repeated (default: 3)"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the servers' logs (always kept after a failure)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 3 s runs, 1 round, 3 cold checks"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.rounds, args.cold = 3, 1, 1, 3
        args.wait_quiet = min(args.wait_quiet, 10)
    try:
        args.threads = [int(t) for t in args.threads.split(",")]
    except ValueError:
        parser.error("--threads: comma-separated whole numbers, such as 1,4")
    if min(args.threads) < 1 or args.workers < 1 or args.rounds < 1 or args.cold < 1:
        parser.error("--threads, --workers, --rounds and --cold must be at least 1")
    return args


def require_tools():
    missing = [tool for tool in ("wrk", "redis-server") if shutil.which(tool) is None]
    if missing:
        raise BenchError(
            f"{' and '.join(missing)} not found on PATH; install with "
            f"`apt-get install -y {' '.join(missing)}` and run again",
            code=2,
        )
    if not (BIN / "gunicorn").exists():
        raise BenchError(
            f"{BIN / 'gunicorn'} not found: run with the project's venv "
            "(.venv/bin/python bench/run.py) after `make install`",
            code=2,
        )


def _interrupt(signum, frame):
    # SIGTERM stops the run as Ctrl-C does, so main's finally still stops the servers.
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        require_tools()
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return exc.code
    logs = Path(tempfile.mkdtemp(prefix="gatekeeper-bench-"))
    procs = Processes(logs)
    signal.signal(signal.SIGTERM, _interrupt)
    ok = False
    try:
        info = machine()
        say(f"orcid-gatekeeper benchmark, {info['date']}, {info['cpu']}; logs in {logs}")
        stack = start_stack(procs)
        configs = [measure_config(procs, stack, args, threads) for threads in args.threads]
        say("")
        client = {
            latency: cold_client(stack, latency, args.cold) for latency in (0, args.latency_ms)
        }
        met = report(info, args, configs, client)
        if args.json:
            write_json(args.json, info, args, configs, client)
        say("\nall targets met" if met else "\nsome targets NOT met (see above)")
        ok = True
        return 0
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("bench: interrupted; stopping the servers", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        if ok and not args.keep_logs:
            shutil.rmtree(logs, ignore_errors=True)
        elif not ok:
            print(f"bench: the servers' logs are in {logs}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
