"""token: the cached ``/auth`` check with a personal access token beside the session cookie.

One gatekeeper (the repo's default gthread x4 unless ``--threads``); a qualified
researcher signs in, makes a token on the Tokens page (``GET /tokens`` for the form's
csrf, ``POST /tokens`` -> 201 with ``gkpat_...``), and wrk sends ``GET /auth`` with
``X-Original-URI`` and either the cookie or ``Authorization: Bearer gkpat_...``, in
alternating rounds against the same workers. Reported: req/s, p50, p99, the workers'
CPU per request and Redis calls per request, for each credential.
"""

from __future__ import annotations

from bench.harness import (
    QUALIFIED,
    Context,
    Report,
    auth_headers,
    bearer_headers,
    check_allowed,
    disturbed,
    make_token,
    median_cpu,
    median_of,
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

TITLE = "cached /auth with a personal access token (Bearer) beside the session cookie"
NEEDS_NGINX = False
DEFAULT_THREADS = [4]


def run(ctx: Context) -> Report:
    args = ctx.args
    stack = start_stack(ctx.procs)
    configs = []
    for threads in ctx.threads(DEFAULT_THREADS):
        stack.redis.flushall()
        configs.append(measure(ctx, stack, threads))
    rows, notes = [], []
    for c in configs:
        workers = f"{args.workers} {c['name']}"
        cookie_rps = median_of(c["runs"]["cookie"], "rps")
        for label, key in (("session cookie", "cookie"), ("`Bearer gkpat_…`", "bearer")):
            runs = c["runs"][key]
            rows.append(
                [
                    workers,
                    label,
                    num(median_of(runs, "rps")),
                    f"{median_of(runs, 'rps') / cookie_rps:.0%}",
                    ms(median_of(runs, "p50_ms")),
                    ms(median_of(runs, "p99_ms")),
                    us(median_cpu(runs, "server")),
                    f"{c['redis'][key]:.4f}",
                    " / ".join(num(r.rps) for r in runs)
                    + (" (disturbed)" if disturbed(runs, args) else ""),
                ]
            )
        bearer_cpu = median_cpu(c["runs"]["bearer"], "server")
        cookie_cpu = median_cpu(c["runs"]["cookie"], "server")
        notes.append(
            f"- **{workers}:** a token check costs {bearer_cpu - cookie_cpu:+.0f} µs of worker "
            f"CPU against a cookie check ({bearer_cpu:.0f} against {cookie_cpu:.0f} µs)."
        )
    markdown = (
        f"`wrk -t{args.wrk_threads} -c{args.connections} -d{args.duration:g}s` on `/auth`, "
        f"cookie and Bearer rounds alternating, median of {args.rounds} round(s):\n\n"
        + table(
            [
                "workers",
                "credential",
                "req/s",
                "of cookie",
                "p50",
                "p99",
                "worker CPU per request",
                "Redis calls per request",
                "rounds",
            ],
            rows,
            "llrrrrrrl",
        )
        + "\n\n"
        + "\n".join(notes)
        + "\n\nCommands (ports and credentials elided):\n\n```\n"
        + "\n".join(
            line
            for c in configs
            for line in (
                c["gunicorn"],
                c["runs"]["cookie"][0].command,
                c["runs"]["bearer"][0].command,
            )
        )
        + "\n```\n"
    )
    data = {
        "configs": [
            {
                "name": c["name"],
                "gunicorn": c["gunicorn"],
                "redis_calls_per_request": c["redis"],
                **{k: [r.as_dict() for r in v] for k, v in c["runs"].items()},
            }
            for c in configs
        ]
    }
    return Report(markdown, data)


def measure(ctx: Context, stack, threads: int) -> dict:
    args = ctx.args
    name = worker_name(threads)
    say(f"\n== {name}: {args.workers} workers, GUNICORN_THREADS={threads} ==")
    ctx.wait_quiet()
    gk = start_gunicorn(
        ctx.procs, stack, f"gatekeeper-{threads}", threads=threads, workers=args.workers
    )
    try:
        cookie, browser = sign_in(gk.url, QUALIFIED)
        token = make_token(gk.url, browser)
        credentials = {"cookie": auth_headers(cookie), "bearer": bearer_headers(token)}
        for key, headers in credentials.items():
            allowed = check_allowed(gk.url, headers, f"/auth with the {key}")
            say(f"/auth with the {key}: 200 for {allowed.headers.get('X-Orcid-Id')}")
        say("warming up")
        for _ in range(40):  # every worker memorises both answers
            for key, headers in credentials.items():
                check_allowed(gk.url, headers, f"warm-up ({key})")
        wrk = dict(threads=args.wrk_threads, connections=args.connections)
        for headers in credentials.values():
            run_wrk(gk.url, headers, seconds=args.warmup, **wrk)
        runs = {"cookie": [], "bearer": []}
        redis_per = {}
        watch = {"server": gk.watch}
        for round_ in range(1, args.rounds + 1):

            def pair():
                out = []
                for key, headers in credentials.items():
                    before = redis_calls(stack)
                    result = run_wrk(gk.url, headers, seconds=args.duration, watch=watch, **wrk)
                    redis_per[key] = (redis_calls(stack) - before) / result.requests
                    out.append(result)
                return tuple(out)

            c, b = undisturbed(pair, args, f"round {round_}")
            runs["cookie"].append(c)
            runs["bearer"].append(b)
            say(
                f"round {round_}: cookie {c.rps:6.0f} req/s, {c.cpu_us['server']:.0f} us CPU, "
                f"p99 {c.p99_ms:.2f} ms | bearer {b.rps:6.0f} req/s, "
                f"{b.cpu_us['server']:.0f} us CPU, p99 {b.p99_ms:.2f} ms | "
                f"other work {c.other_cores:.2f}/{b.other_cores:.2f} cores"
            )
    finally:
        ctx.procs.stop(gk.process)
    return {"name": name, "gunicorn": gk.command, "runs": runs, "redis": redis_per}
