"""servers: the same gatekeeper app under other WSGI servers and gunicorn worker types: CPU
per cached /auth, p99 at half of each one's peak, and whether each keeps what /auth relies on.

Issue #14 asks whether a server other than gunicorn, or another gunicorn worker type,
would bring `/auth` under 120 µs of CPU, and its p99 at half of peak under 5 ms. Each
candidate serves ``app:create_app()`` unchanged, with the same settings, two processes,
on loopback:

- gunicorn gthread x4 with its pure-Python HTTP parser (the repo's default);
- gunicorn gthread x4 with gunicorn's C parser, gunicorn_h1c (``GUNICORN_HTTP_PARSER=fast``);
- gunicorn's gevent worker (``-k gevent``: one thread, a greenlet per connection);
- uWSGI, ``--http-socket`` (HTTP/1.0: one connection per request);
- uWSGI, ``--http11-socket``;
- granian, ``--interface wsgi``.

A candidate that is not installed is reported as such (``pip install -e '.[servers]'``).
For each: the workers' CPU per cached ``/auth`` (``wrk -t2 -c32``, alternating rounds,
medians); the p99 at half of its own median peak, Poisson arrivals paced by report.lua
over 16 kept-alive connections and counted from each request's scheduled time, as the
auth scenario does for gthread (not for uWSGI's ``--http-socket``, which closes every
connection: see report.lua); and three probes sent to the gatekeeper with the qualified
researcher's cookie. A probe's requests must all be refused; a 200 means the server let a header the
proxy never sent decide, or held up checks:

- *underscore name*: ``X_Original_URI: /datasets/sail-cohort/...`` alone. It maps to
  ``HTTP_X_ORIGINAL_URI`` as ``X-Original-URI`` does; gunicorn drops such names (its
  ``header_map``), others pass it as if the proxy had sent it. Caddy and Traefik pass a
  browser's headers on to the check unless told otherwise (docs/proxies/).
- *repeated header*: ``X-Original-URI`` twice, the dataset and ``/elsewhere``, in both
  orders. Joined (``a,b``), the check fails closed; a server that keeps only the first,
  or only the last, lets one of them decide.
- *idle keep-alive*: 17 connections, opened one after another, each ask once and stay
  open; every answer must come within a second. A server that keeps a thread on an idle
  connection (uWSGI's ``--http11-socket`` does, for ``--socket-timeout``) stalls checks
  behind a proxy's pool of open connections.

Not probed: the raw request line (``RAW_URI``, ``REQUEST_URI``), which granian does
not give: for ``/auth/<path>`` the app then re-encodes PATH_INFO, which judges the same
dataset (tests/unit/test_forward_auth.py).
"""

from __future__ import annotations

import http.client
import re
import socket
import sys
import time
from dataclasses import dataclass, field

from bench.harness import (
    BIN,
    ORIGINAL_URI,
    QUALIFIED,
    BenchError,
    Context,
    Report,
    Watch,
    WrkResult,
    auth_headers,
    check_allowed,
    disturbed,
    free_port,
    gunicorn_env,
    median_cpu,
    median_of,
    met,
    ms,
    num,
    run_wrk,
    say,
    sign_in,
    start_stack,
    table,
    undisturbed,
    us,
    wait_until,
)

TITLE = (
    "the gatekeeper under other WSGI servers and worker types: CPU per cached /auth, p99 "
    "at half of peak, and three probes"
)
NEEDS_NGINX = False
THREADS = 4
TARGET_CPU_US = 120
TARGET_P99_MS = 5.0  # at half of the server's own peak, from each request's schedule
HALF_REACHED = 0.45  # the half-of-peak run counts if it answered at least this share
OTHER_URI = "/elsewhere"  # no dataset owns it: a check about it is refused
IDLE = 16  # connections left idle before the last one asks: more than 2 x 4 threads


@dataclass
class Candidate:
    name: str
    needs: str  # the executable or module it needs
    argv: list[str] = field(default_factory=list)
    extra_env: dict = field(default_factory=dict)
    keeps_alive: bool = True  # paced runs need kept-alive connections (report.lua)
    supported: bool = True  # False: measured only, never a candidate to adopt


def candidates(port: int, workers: int) -> list[Candidate]:
    bind = f"127.0.0.1:{port}"
    gunicorn = [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "app:create_app()"]
    return [
        Candidate("gunicorn gthread x4, Python parser", "gunicorn", [*gunicorn], {
            "GUNICORN_HTTP_PARSER": "python",
        }),
        Candidate("gunicorn gthread x4, gunicorn_h1c parser", "gunicorn_h1c", [*gunicorn], {
            "GUNICORN_HTTP_PARSER": "fast",
        }),
        # Measured, not supported: gunicorn patches the standard library for gevent after
        # this repo's preload_app has built the app (its Redis pool, locks) unpatched.
        Candidate("gunicorn gevent, Python parser", "gevent", [*gunicorn, "-k", "gevent"], {
            "GUNICORN_HTTP_PARSER": "python",
        }, supported=False),
        Candidate("uWSGI --http-socket, 2 x 4 threads", "uwsgi", [
            str(BIN / "uwsgi"), "--http-socket", bind, "--master", "--processes", str(workers),
            "--threads", str(THREADS), "--enable-threads", "--module", "app:create_app()",
            "--need-app", "--die-on-term", "--disable-logging", "--buffer-size", "16384",
        ], keeps_alive=False),
        Candidate("uWSGI --http11-socket, 2 x 4 threads", "uwsgi", [
            str(BIN / "uwsgi"), "--http11-socket", bind, "--master", "--processes",
            str(workers), "--threads", str(THREADS), "--enable-threads", "--module",
            "app:create_app()", "--need-app", "--die-on-term", "--disable-logging",
            "--buffer-size", "16384",
        ]),
        Candidate("granian WSGI, 2 x 4 threads", "granian", [
            str(BIN / "granian"), "--interface", "wsgi", "--host", "127.0.0.1", "--port",
            str(port), "--workers", str(workers), "--blocking-threads", str(THREADS),
            "--factory", "app:create_app",
        ]),
    ]  # fmt: skip


def installed(needs: str) -> bool:
    if needs in ("uwsgi", "granian", "gunicorn"):
        return (BIN / needs).exists()
    try:
        __import__(needs)
    except ImportError:
        return False
    return True


@dataclass
class Result:
    name: str
    command: str
    keeps_alive: bool
    supported: bool
    runs: list = field(default_factory=list)
    probes: dict = field(default_factory=dict)  # probe -> (passed, what happened)
    half: WrkResult | None = None  # paced at half of its median peak (kept-alive only)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "command": self.command,
            "runs": [r.as_dict() for r in self.runs],
            "half_of_peak": self.half.as_dict() if self.half else None,
            "probes": {k: {"passed": p, "seen": s} for k, (p, s) in self.probes.items()},
        }


def run(ctx: Context) -> Report:
    stack = start_stack(ctx.procs)
    results, missing = [], []
    servers = []
    try:
        for index, spec in enumerate(candidates(0, ctx.args.workers)):
            if not installed(spec.needs):
                missing.append(spec.name)
                say(f"{spec.name}: {spec.needs} is not installed; pip install -e '.[servers]'")
                continue
            servers.append(start(ctx, stack, index))
        if not servers:
            raise BenchError("no server to measure")
        cookie, _ = sign_in(servers[0][1], QUALIFIED)
        headers = auth_headers(cookie)
        for spec, url, _process in servers:
            check_allowed(url, headers, f"{spec.name}: the qualified researcher")
            for _ in range(40):  # every worker memorises the answer
                check_allowed(url, headers, "warm-up")
            run_wrk(url, headers, threads=ctx.args.wrk_threads, connections=32, seconds=2)
            result = Result(spec.name, command_of(spec), spec.keeps_alive, spec.supported)
            result.probes = probe(url, cookie)
            results.append(result)
            kept = [k for k, (ok, _) in result.probes.items() if ok]
            say(f"{spec.name}: probes kept: {', '.join(kept) or 'none'}")
        for round_ in range(1, ctx.args.rounds + 1):

            def one_round():
                return tuple(
                    run_wrk(
                        url,
                        headers,
                        threads=ctx.args.wrk_threads,
                        connections=ctx.args.connections,
                        seconds=ctx.args.duration,
                        watch={"server": Watch(process.pid, children_only=True)},
                    )
                    for _, url, process in servers
                )

            for result, run_ in zip(
                results, undisturbed(one_round, ctx.args, f"round {round_}"), strict=True
            ):
                result.runs.append(run_)
                say(
                    f"round {round_}: {result.name}: {run_.rps:7.0f} req/s, "
                    f"{run_.cpu_us['server']:4.0f} µs per /auth, p99 {run_.p99_ms:.2f} ms"
                )
        for result, (_, url, process) in zip(results, servers, strict=True):
            if result.keeps_alive:
                result.half = half_of_peak(ctx, result, url, headers, process)
    finally:
        for _, _, process in servers:
            ctx.procs.stop(process)
    return report(ctx, results, missing)


def half_of_peak(ctx: Context, result: Result, url: str, headers: dict, process) -> WrkResult:
    """Poisson arrivals at half of the server's own median peak; p99 from schedule."""
    paced = ctx.args.paced_connections
    half = undisturbed(
        lambda: (
            run_wrk(
                url,
                headers,
                threads=paced,
                connections=paced,
                seconds=ctx.args.duration,
                rate=median_of(result.runs, "rps") / 2,
                watch={"server": Watch(process.pid, children_only=True)},
            ),
        ),
        ctx.args,
        f"{result.name}: half of peak",
    )[0]
    say(
        f"{result.name}: half of peak: {half.rps:.0f} req/s, p99 {half.p99_ms:.2f} ms from "
        f"send, {half.p99_from_schedule_ms:.2f} ms from schedule, "
        f"{half.cpu_us['server']:.0f} µs per /auth"
    )
    return half


def start(ctx: Context, stack, index: int):
    port = free_port()
    spec = candidates(port, ctx.args.workers)[index]
    env = gunicorn_env(stack, port, THREADS, ctx.args.workers)
    env.update(spec.extra_env)
    process = ctx.procs.start(f"server-{index}", spec.argv, env)
    url = f"http://127.0.0.1:{port}"

    def up():
        ctx.procs.check_alive(process, f"server-{index}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
        except OSError:
            return False
        return True

    wait_until(up, spec.name, timeout=60)
    return spec, url, process


def get(url: str, path: str, headers: list[tuple[str, str]], timeout: float = 5) -> int:
    """The status of ``GET path`` with ``headers`` sent exactly in this order."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.putrequest("GET", path, skip_accept_encoding=True)
        for name, value in headers:
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def probe(url: str, cookie: str) -> dict:
    cookie_header = ("Cookie", f"gatekeeper_session={cookie}")
    found = {}
    status = get(url, "/auth", [cookie_header, ("X_Original_URI", ORIGINAL_URI)])
    found["underscore name"] = (status != 200, f"{status}")
    statuses = [
        get(url, "/auth", [cookie_header, ("X-Original-URI", a), ("X-Original-URI", b)])
        for a, b in ((ORIGINAL_URI, OTHER_URI), (OTHER_URI, ORIGINAL_URI))
    ]
    found["repeated header"] = (200 not in statuses, " and ".join(map(str, statuses)))
    found["idle keep-alive"] = idle_keep_alive(url, cookie_header)
    return found


def idle_keep_alive(url: str, cookie_header) -> tuple[bool, str]:
    """Each of IDLE + 1 new connections asks once while the earlier ones idle, open."""
    host, port = url.removeprefix("http://").split(":")
    headers = dict([cookie_header, ("X-Original-URI", ORIGINAL_URI)])
    opened, slowest, statuses = [], 0.0, set()
    try:
        for _ in range(IDLE + 1):
            connection = http.client.HTTPConnection(host, int(port), timeout=10)
            opened.append(connection)
            started = time.monotonic()
            connection.request("GET", "/auth", headers=headers)
            response = connection.getresponse()
            response.read()
            slowest = max(slowest, time.monotonic() - started)
            statuses.add(response.status)
    except (OSError, http.client.HTTPException) as exc:
        return False, f"{type(exc).__name__} on connection {len(opened)}"
    finally:
        for connection in opened:
            connection.close()
    seen = f"slowest {slowest * 1000:.0f} ms"
    return statuses == {200} and slowest < 1.0, seen


def command_of(spec: Candidate) -> str:
    """The command as typed, the candidate's own settings first; ports left out."""
    words = [f"{k}={shell(v)}" for k, v in spec.extra_env.items()]
    words += [shell(a) for a in spec.argv]
    command = " ".join(words)
    command = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", command)
    return re.sub(r"--port \d+", "--port PORT", command)


def shell(arg: str) -> str:
    arg = arg.replace(str(BIN) + "/", ".venv/bin/")
    return f"'{arg}'" if any(c in arg for c in " ()") else arg


def served(result: Result) -> float:
    """The share of its peak the server answered when offered half of it."""
    return result.half.rps / median_of(result.runs, "rps")


def half_cell(result: Result) -> str:
    if result.half is None:
        return "–"
    if served(result) < HALF_REACHED:
        return f"– (answered {served(result):.0%} of its peak)"
    return ms(result.half.p99_from_schedule_ms)


def half_note(result: Result) -> str:
    if result.half is None:
        return ""
    p99 = result.half.p99_from_schedule_ms
    if served(result) < HALF_REACHED:  # the p99 of a lighter load says nothing
        return (
            f"p99 at half of peak not measured: offered half of its peak, it answered "
            f"{served(result):.0%} of its peak ({p99:.2f} ms); "
        )
    verdict = met(p99 <= TARGET_P99_MS)
    return f"p99 at half of peak {p99:.2f} ms (target ≤ {TARGET_P99_MS:g} ms: {verdict}); "


def report(ctx: Context, results: list[Result], missing: list[str]) -> Report:
    args = ctx.args
    probes = list(results[0].probes) if results else []
    rows = []
    for r in results:
        rows.append(
            [
                r.name,
                num(median_of(r.runs, "rps")),
                ms(median_of(r.runs, "p99_ms")),
                us(median_cpu(r.runs, "server"))
                + (" (disturbed)" if disturbed(r.runs, args) else ""),
                half_cell(r),
                *(("kept" if r.probes[p][0] else "**broken**") + f" ({r.probes[p][1]})"
                  for p in probes),
            ]
        )  # fmt: skip
    safe = [r for r in results if all(ok for ok, _ in r.probes.values())]
    fastest = min(
        (r for r in safe if r.supported), key=lambda r: median_cpu(r.runs, "server"), default=None
    )
    notes = [
        f"- {r.name}: {median_cpu(r.runs, 'server'):.0f} µs per `/auth` (target ≤ "
        f"{TARGET_CPU_US} µs: {met(median_cpu(r.runs, 'server') <= TARGET_CPU_US)}); "
        + half_note(r)
        + (
            "keeps every probe"
            if r in safe
            else "breaks: " + ", ".join(p for p in probes if not r.probes[p][0])
        )
        + ("" if r.supported else " (measured, not supported)")
        + "."
        for r in results
    ]
    notes += [f"- {name}: not installed." for name in missing]
    if fastest is not None:
        notes.append(f"- The cheapest supported server that keeps every probe: **{fastest.name}**.")
    markdown = (
        f"### `wrk -t{args.wrk_threads} -c{args.connections} -d{args.duration:g}s`, "
        f"{args.workers} processes, median of {args.rounds} alternating round(s); p99 at "
        f"half of peak: Poisson arrivals over {args.paced_connections} kept-alive "
        "connections, from each request's scheduled time; probes answered 200 are "
        "broken\n\n"
        + table(
            ["server", "req/s", "p99", "CPU per cached `/auth`", "p99 at half of peak", *probes],
            rows,
            "lrrrr" + "l" * len(probes),
        )
        + "\n\n"
        + "\n".join(notes)
        + "\n\nCommands (ports elided; the gatekeeper's settings as in the other scenarios):"
        + "\n\n```\n"
        + "\n".join(r.command for r in results)
        + "\n```\n"
    )
    ok = fastest is not None and median_cpu(fastest.runs, "server") <= TARGET_CPU_US
    data = {"servers": [r.as_dict() for r in results], "missing": missing}
    return Report(markdown, data, ok)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run through bench/run.py --scenario servers")
