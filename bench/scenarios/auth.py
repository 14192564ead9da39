"""auth: the cached ``GET /auth`` against a bare Flask endpoint, at peak and at half of it.

For each worker setting (``--threads``, default 1 and 4: sync and gthread x4), two
gunicorns with the repository's gunicorn.conf.py: the gatekeeper and bench/bare_app.py.
A qualified researcher signs in; wrk sends ``GET /auth`` with the cookie and
``X-Original-URI`` as nginx's auth_request does. Peak: ``wrk -t2 -c32``, alternating
bare and /auth rounds, medians. Then p99 at about half of each one's peak (Poisson
arrivals for gthread, one closed-loop connection for sync: see bench/README.md).
Reported: req/s, p50, p99, and the CPU the gunicorn workers spent per request.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.harness import (
    QUALIFIED,
    Context,
    Gunicorn,
    Report,
    WrkResult,
    auth_headers,
    check_allowed,
    disturbed,
    emulator_reset,
    median_cpu,
    median_of,
    met,
    ms,
    num,
    redis_calls,
    run_wrk,
    say,
    sign_in,
    start_gunicorn,
    start_stack,
    table,
    undisturbed,
    us,
    worker_name,
)

TITLE = "cached /auth against a bare Flask endpoint: req/s, p99, CPU per request"
NEEDS_NGINX = False
DEFAULT_THREADS = [1, 4]

# The targets.
TARGET_RATIO = 0.80  # /auth at least 80% of the bare endpoint's req/s
TARGET_P99_MS = 5.0  # p99 at half of peak
TARGET_CPU_US = 120  # server CPU per cached /auth


@dataclass
class ConfigResult:
    name: str
    threads: int
    workers: int
    commands: list = field(default_factory=list)
    bare: list[WrkResult] = field(default_factory=list)
    auth: list[WrkResult] = field(default_factory=list)
    redis_calls_per_auth: float | None = None
    half_method: str = ""
    half_auth: WrkResult | None = None
    half_bare: WrkResult | None = None
    quarter_auth: WrkResult | None = None  # paced runs only: /auth at a quarter of its peak

    def as_dict(self) -> dict:
        def runs(items):
            return [r.as_dict() for r in items]

        return {
            "name": self.name,
            "threads": self.threads,
            "workers": self.workers,
            "gunicorn": self.commands,
            "bare": runs(self.bare),
            "auth": runs(self.auth),
            "redis_calls_per_auth": self.redis_calls_per_auth,
            "half_method": self.half_method,
            "half_auth": self.half_auth.as_dict(),
            "half_bare": self.half_bare.as_dict(),
            "quarter_auth": self.quarter_auth.as_dict() if self.quarter_auth else None,
        }


def run(ctx: Context) -> Report:
    stack = start_stack(ctx.procs)
    configs = []
    for threads in ctx.threads(DEFAULT_THREADS):
        stack.redis.flushall()
        emulator_reset(stack)
        configs.append(measure_config(ctx, stack, threads))
    return report(ctx, configs)


def measure_config(ctx: Context, stack, threads: int) -> ConfigResult:
    args = ctx.args
    result = ConfigResult(worker_name(threads), threads, args.workers)
    say(f"\n== {result.name}: {args.workers} workers, GUNICORN_THREADS={threads} ==")
    ctx.wait_quiet()
    settings = dict(threads=threads, workers=args.workers)
    gk = start_gunicorn(ctx.procs, stack, f"gatekeeper-{threads}", **settings)
    bare = start_gunicorn(
        ctx.procs, stack, f"bare-{threads}", "bench.bare_app:create_app()", **settings
    )
    result.commands = [gk.command, bare.command]
    try:
        cookie, _ = sign_in(gk.url, QUALIFIED)
        headers = auth_headers(cookie)
        allowed = check_allowed(gk.url, headers, "the qualified researcher")
        say(f"signed in as {allowed.headers.get('X-Orcid-Id')}; /auth answers 200; warming up")
        for _ in range(40):  # every worker memorises the answer
            check_allowed(gk.url, headers, "warm-up")
        wrk = dict(threads=args.wrk_threads, connections=args.connections)
        for server in (bare, gk):
            run_wrk(server.url, headers, seconds=args.warmup, **wrk)

        for round_ in range(1, args.rounds + 1):

            def pair():
                b = run_wrk(bare.url, headers, seconds=args.duration, watch=_w(bare), **wrk)
                before = redis_calls(stack)
                a = run_wrk(gk.url, headers, seconds=args.duration, watch=_w(gk), **wrk)
                result.redis_calls_per_auth = (redis_calls(stack) - before) / a.requests
                return b, a

            b, a = undisturbed(pair, args, f"round {round_}")
            result.bare.append(b)
            result.auth.append(a)
            say(
                f"round {round_}: bare {b.rps:6.0f} req/s, p50 {b.p50_ms:.2f} ms, p99 "
                f"{b.p99_ms:.2f} ms | /auth {a.rps:6.0f} req/s, p50 {a.p50_ms:.2f} ms, "
                f"p99 {a.p99_ms:.2f} ms | ratio {a.rps / b.rps:.0%}"
            )
            say(
                f"         worker CPU per request: bare {b.cpu_us['server']:.0f} us, /auth "
                f"{a.cpu_us['server']:.0f} us; wrk {b.wrk_cores:.2f}/{a.wrk_cores:.2f} "
                f"cores; other work {b.other_cores:.2f}/{a.other_cores:.2f} cores; "
                f"Redis calls per /auth {result.redis_calls_per_auth:.4f}"
            )

        half_load(gk, bare, headers, result, args)
        for label, run_, peak in (
            ("/auth", result.half_auth, result.auth),
            ("bare", result.half_bare, result.bare),
        ):
            say(
                f"half load {label} ({result.half_method}): {run_.rps:.0f} req/s "
                f"({run_.rps / median_of(peak, 'rps'):.0%} of peak), p50 {run_.p50_ms:.2f} ms, "
                f"p99 {run_.p99_ms:.2f} ms"
                + (
                    f" from send, {run_.p99_from_schedule_ms:.2f} ms from schedule"
                    if run_.p99_from_schedule_ms is not None
                    else ""
                )
                + f"; other work {run_.other_cores:.2f} cores"
            )
        if (q := result.quarter_auth) is not None:
            say(
                f"quarter load /auth: {q.rps:.0f} req/s, p50 {q.p50_ms:.2f} ms, p99 "
                f"{q.p99_ms:.2f} ms from send, {q.p99_from_schedule_ms:.2f} ms from schedule"
            )
    finally:
        ctx.procs.stop(bare.process)
        ctx.procs.stop(gk.process)
    return result


def _w(server: Gunicorn) -> dict:
    return {"server": server.watch}


def half_load(gk: Gunicorn, bare: Gunicorn, headers, result: ConfigResult, args):
    """p99 at about half of each endpoint's peak, into ``result``.

    Keep-alive (gthread): Poisson arrivals at half the measured peak, paced by
    report.lua. Sync: gunicorn's sync worker holds a closed connection until the client
    closes too, and wrk can only pause while holding one (see report.lua), so the load is
    one closed-loop connection instead: one request in flight, no queueing at all.
    """
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
    result.half_auth = undisturbed(
        lambda: (run_wrk(gk.url, headers, rate=auth_rate, watch=_w(gk), **load),),
        args,
        "half load /auth",
    )[0]
    result.half_bare = undisturbed(
        lambda: (run_wrk(bare.url, headers, rate=bare_rate, watch=_w(bare), **load),),
        args,
        "half load bare",
    )[0]
    if auth_rate is not None:  # where the tail stands at a lighter load
        result.quarter_auth = undisturbed(
            lambda: (run_wrk(gk.url, headers, rate=auth_rate / 2, watch=_w(gk), **load),),
            args,
            "quarter load /auth",
        )[0]


def report(ctx: Context, configs: list[ConfigResult]) -> Report:
    args = ctx.args
    peak_rows, half_rows, notes, verdicts = [], [], [], []
    for c in configs:
        workers = f"{c.workers} {c.name}"
        for label, runs in (("bare Flask", c.bare), ("cached `/auth`", c.auth)):
            peak_rows.append(
                [
                    workers,
                    label,
                    num(median_of(runs, "rps")),
                    ms(median_of(runs, "p50_ms")),
                    ms(median_of(runs, "p99_ms")),
                    us(median_cpu(runs, "server")),
                    " / ".join(num(r.rps) for r in runs)
                    + (" (disturbed)" if disturbed(runs, args) else ""),
                ]
            )
        for label, half, peak in (
            ("cached `/auth`", c.half_auth, c.auth),
            ("bare Flask", c.half_bare, c.bare),
        ):
            half_rows.append(
                [
                    workers,
                    label,
                    c.half_method,
                    f"{num(half.rps)} ({half.rps / median_of(peak, 'rps'):.0%})",
                    ms(half.p50_ms),
                    ms(half.p99_ms),
                    ms(half.p99_from_schedule_ms),
                    us(half.cpu_us.get("server")),
                ]
            )
        if (q := c.quarter_auth) is not None:
            half_rows.append(
                [
                    workers,
                    "cached `/auth`",
                    "Poisson arrivals at a quarter of its peak",
                    f"{num(q.rps)} ({q.rps / median_of(c.auth, 'rps'):.0%})",
                    ms(q.p50_ms),
                    ms(q.p99_ms),
                    ms(q.p99_from_schedule_ms),
                    us(q.cpu_us.get("server")),
                ]
            )
        ratio = median_of(c.auth, "rps") / median_of(c.bare, "rps")
        cpu = median_cpu(c.auth, "server")
        p99 = c.half_auth.p99_from_schedule_ms or c.half_auth.p99_ms
        verdicts += [ratio >= TARGET_RATIO, p99 <= TARGET_P99_MS, cpu <= TARGET_CPU_US]
        notes.append(
            f"- **{workers}:** `/auth` / bare = **{ratio:.0%}** (target ≥ {TARGET_RATIO:.0%}: "
            f"{met(ratio >= TARGET_RATIO)}); CPU per cached `/auth` **{cpu:.0f} µs** (target ≤ "
            f"{TARGET_CPU_US} µs: {met(cpu <= TARGET_CPU_US)}); p99 at half of peak "
            f"**{p99:.2f} ms** (target ≤ {TARGET_P99_MS:g} ms: {met(p99 <= TARGET_P99_MS)}); "
            f"Redis calls per `/auth` {c.redis_calls_per_auth:.4f}."
        )
    markdown = (
        f"### Peak: `wrk -t{args.wrk_threads} -c{args.connections} -d{args.duration:g}s`, "
        f"median of {args.rounds} alternating round(s)\n\n"
        + table(
            ["workers", "endpoint", "req/s", "p50", "p99", "worker CPU per request", "rounds"],
            peak_rows,
            "llrrrrl",
        )
        + "\n\n### p99 at about half of peak\n\n"
        + table(
            [
                "workers",
                "endpoint",
                "load",
                "req/s (of peak)",
                "p50",
                "p99 from send",
                "p99 from schedule",
                "CPU per request",
            ],
            half_rows,
            "lllrrrrr",
        )
        + "\n\n"
        + "\n".join(notes)
        + "\n\nCommands (ports and the cookie elided):\n\n```\n"
        + "\n".join(
            line for c in configs for line in (*c.commands, c.auth[0].command, c.half_auth.command)
        )
        + "\n```\n"
    )
    return Report(markdown, {"configs": [c.as_dict() for c in configs]}, all(verdicts))
