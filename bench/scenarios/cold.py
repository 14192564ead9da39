"""cold: a cold decision for a record with 30 candidate items, ORCID 50 ms away.

The ORCID emulator adds ``--latency-ms`` (50) to every record read. The researcher
``many-items`` (bench/fixtures.yaml) has 35 qualifications, 30 of them candidates for
sail-cohort. For each check the cached decisions are deleted from Redis and the workers'
one-second memories left to lapse, then ``GET /auth`` is timed; the emulator counts the
calls. Done with +0 ms and +50 ms, for each worker setting (default sync and gthread x4),
and for ``OrcidClient.read_qualifications`` alone. The difference between +50 and +0 is
what ORCID's latency costs, in round trips.
"""

from __future__ import annotations

import statistics
import time

from bench.harness import (
    CANDIDATES,
    DATASET,
    FIXTURES,
    MANY_ITEMS,
    RECORD_KINDS,
    REPO,
    SYNC_INTERVAL,
    BenchError,
    Context,
    Report,
    auth_headers,
    emulator_counts,
    emulator_faults,
    emulator_reset,
    met,
    say,
    sign_in,
    start_gunicorn,
    start_stack,
    table,
    worker_name,
)

TITLE = "a cold decision: 30 candidate items, ORCID +50 ms per call"
NEEDS_NGINX = False
DEFAULT_THREADS = [1, 4]
TARGET_ROUND_TRIPS = 3  # "about two round trips", not thirty-one


def run(ctx: Context) -> Report:
    args = ctx.args
    latencies = (0, args.latency_ms)
    stack = start_stack(ctx.procs)
    measured, data, commands = [], {"configs": []}, []  # measured: (label, timings)
    for threads in ctx.threads(DEFAULT_THREADS):
        name = worker_name(threads)
        say(f"\n== {name}: {args.workers} workers, GUNICORN_THREADS={threads} ==")
        stack.redis.flushall()
        emulator_reset(stack)
        gk = start_gunicorn(
            ctx.procs, stack, f"gatekeeper-{threads}", threads=threads, workers=args.workers
        )
        commands.append(gk.command)
        try:
            cookie, _ = sign_in(gk.url, MANY_ITEMS)  # signed in before any latency is added
            ctx.wait_quiet()
            cold = {lat: cold_decisions(stack, gk.url, cookie, lat, args.cold) for lat in latencies}
        finally:
            ctx.procs.stop(gk.process)
        measured.append((f"cold `/auth`, {args.workers} {name} workers", cold))
        data["configs"].append({"name": name, "gunicorn": gk.command, "cold": _json(cold)})
    say("")
    ctx.wait_quiet()
    client = {lat: cold_client(stack, lat, args.cold) for lat in latencies}
    measured.append(("`OrcidClient.read_qualifications` alone", client))
    data["client"] = _json(client)
    trips = [_round_trips(cold, args.latency_ms) for _, cold in measured]
    ok = all(t < TARGET_ROUND_TRIPS for t in trips[:-1])
    markdown = (
        f"{args.cold} checks each; the median, with the range at +{args.latency_ms} ms.\n\n"
        + table(
            [
                "",
                "+0 ms",
                f"+{args.latency_ms} ms",
                "round trips of ORCID's latency",
                "ORCID calls per check",
            ],
            [_row(label, cold, args) for label, cold in measured],
            "lrrrl",
        )
        + f"\n\nRound trips = (median at +{args.latency_ms} − median at +0) / "
        f"{args.latency_ms} ms (target for `/auth`: about two, under {TARGET_ROUND_TRIPS}: "
        f"{met(ok)}).\n\nServers:\n\n```\n" + "\n".join(commands) + "\n```\n"
    )
    return Report(markdown, data, ok)


def _json(cold: dict) -> dict:
    return {str(k): {"ms": v[0], "orcid_requests": v[1]} for k, v in cold.items()}


def _row(label: str, cold: dict, args) -> list:
    slow = cold[args.latency_ms][0]
    return [
        label,
        f"{statistics.median(cold[0][0]):.0f} ms",
        f"**{statistics.median(slow):.0f} ms** ({min(slow):.0f}–{max(slow):.0f})",
        f"{_round_trips(cold, args.latency_ms):.1f}",
        _per(cold[args.latency_ms][1], args.cold),
    ]


def cold_decisions(
    stack, gk_url: str, cookie: str, latency: int, count: int
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
    for n in range(1, count + 1):
        decisions = list(stack.redis.scan_iter(match="gk:*:d:*", count=1000))
        if decisions:
            stack.redis.delete(*decisions)
        time.sleep(SYNC_INTERVAL + 0.1)
        start = time.perf_counter()
        response = requests.get(f"{gk_url}/auth", headers=headers, timeout=30)
        times.append((time.perf_counter() - start) * 1000)
        if response.status_code != 200:
            raise BenchError(
                f"cold /auth for {MANY_ITEMS} (check {n} of {count}, ORCID +{latency} ms) "
                f"answered {response.status_code}; the gatekeeper's log says why"
            )
    counts = emulator_counts(stack)
    emulator_reset(stack)
    say(
        f"cold /auth, {CANDIDATES} candidates, ORCID +{latency} ms: median "
        f"{statistics.median(times):.0f} ms (min {min(times):.0f}, max {max(times):.0f}); "
        f"ORCID requests over {count} checks: {_counts(counts)}"
    )
    return times, counts


def cold_client(stack, latency: int, count: int) -> tuple[list[float], dict]:
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


def _round_trips(cold: dict, latency: int) -> float:
    """How many round trips ORCID's added latency cost: (median at +latency - at +0) / latency."""
    return (statistics.median(cold[latency][0]) - statistics.median(cold[0][0])) / latency


def _per(counts: dict, n: int) -> str:
    return ", ".join(f"{k} {v / n:g}" for k, v in counts.items() if v) or "none"
