"""Fault scenarios under load, as the proxy sees them: a Redis hang, a Redis kill and
restart, ORCID stalling six seconds under a burst of cold checks, and a Redis primary
killed while Sentinel watches it.

    .venv/bin/python bench/faults.py            # about 110 seconds, every scenario
    .venv/bin/python bench/faults.py sentinel   # the primary kill only, about 20 seconds

Starts its own redis-server, the ORCID emulator and gunicorn (2 workers x 4 threads) on
loopback, with the integration tests' fixtures. Sixteen client threads send cached
``/auth`` checks on kept-alive connections: a qualified researcher (200 expected), an
unqualified one (403) and a signed-out cookie (401). A wrong answer is a 200 that should
not be one, or any 5xx or timeout. Prints one JSON object per scenario.

The primary kill runs on its own topology (tests/integration/redis_topologies.py: a
primary, a replica and three sentinels that call a primary down after 1 s) and its own
gatekeeper on ``redis+sentinel://``. Its recovery is counted from the kill, not from a
fault clearing: nothing clears it but the promotion.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).parents[1]))

from app.emulator import create_app
from app.emulator.server import serve_in_thread
from tests.integration.conftest import (
    EMULATOR_CLIENT,
    Emulator,
    Gatekeeper,
    RedisServer,
    free_port,
    gatekeeper_env,
    sign_in,
)
from tests.integration.redis_topologies import Sentinels

ORCID_TIMEOUT = 8.0
FILE = {"X-Original-URI": "/datasets/sail-cohort/data.csv"}
COLD = ["expired", "not-yet-valid", "self-issued", "empty", "many-items", "limited"]


class Load:
    """Client threads looping over /auth; every answer kept as (start, seconds, kind, status)."""

    def __init__(self, url: str, cookies: dict[str, dict], threads: int = 16):
        self.url, self.cookies, self.samples = url, cookies, []
        self.stopping = threading.Event()
        kinds = list(cookies)
        self.threads = [
            threading.Thread(target=self.run, args=(kinds[n % len(kinds)],), daemon=True)
            for n in range(threads)
        ]

    def run(self, kind: str):
        session = requests.Session()
        session.cookies.update(self.cookies[kind])
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                status = session.get(
                    f"{self.url}/auth", headers=FILE, allow_redirects=False, timeout=15
                ).status_code
            except requests.RequestException:
                status = 0
            self.samples.append((started, time.monotonic() - started, kind, status))
            time.sleep(0.005)

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        for thread in self.threads:
            thread.join()


EXPECTED = {"qualified": {200, 401}, "unqualified": {403, 401}, "signed-out": {401}}


def report(name: str, samples, since: float, fault_at: float, cleared_at: float, **extra):
    window = [s for s in samples if s[0] >= since]
    latencies = sorted(s[1] for s in window)
    wrong = [s for s in window if s[3] not in EXPECTED[s[2]]]
    # Recovery: from the fault clearing to the first 200 for the qualified researcher
    # after which every one of theirs is 200 again.
    qualified = [s for s in window if s[2] == "qualified" and s[0] >= cleared_at]
    recovered = None
    for index, sample in enumerate(qualified):
        if all(s[3] == 200 for s in qualified[index:]):
            recovered = round(sample[0] - cleared_at, 3)
            break
    during = [s for s in window if fault_at <= s[0] < cleared_at]
    result = {
        "scenario": name,
        "answers": len(window),
        "wrong": len(wrong),
        "slowest_ms": round(latencies[-1] * 1000, 1),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
        "during_fault": {
            "answers": len(during),
            "slowest_ms": round(max((s[1] for s in during), default=0) * 1000, 1),
            "qualified_200": sum(1 for s in during if s[2] == "qualified" and s[3] == 200),
            "qualified_401": sum(1 for s in during if s[2] == "qualified" and s[3] == 401),
        },
        "recovery_s": recovered,
        **extra,
    }
    print(json.dumps(result), flush=True)
    return result


def signed_in(url: str, persona: str) -> dict:
    return dict(sign_in(url, persona)[0].cookies)


def signed_out(url: str) -> dict:
    browser, _ = sign_in(url, "qualified")
    cookies = dict(browser.cookies)
    token = re.search(r'name="csrf" value="([^"]+)"', browser.get(f"{url}/logout").text)[1]
    browser.post(f"{url}/logout", data={"csrf": token}, timeout=10).raise_for_status()
    return cookies


def sentinel_primary_kill(tmp: Path, orcid: Emulator):
    """SIGKILL the primary under load; Sentinel promotes the replica."""
    topology = Sentinels(tmp / "sentinels")
    port = free_port()
    env = gatekeeper_env(
        tmp,
        orcid,
        topology.url(),
        f"http://127.0.0.1:{port}",
        GUNICORN_THREADS="4",
        GK_LOG=str(tmp / "gatekeeper-sentinel.log"),
    )
    gatekeeper = Gatekeeper(env, port, workers=2)
    url = gatekeeper.url
    try:
        cookies = {
            "qualified": signed_in(url, "qualified"),
            "unqualified": signed_in(url, "self-asserted"),
            "signed-out": signed_out(url),
        }
        with Load(url, cookies) as load:
            time.sleep(3)  # every worker has every answer
            start = time.monotonic()
            time.sleep(2)
            old = topology.primary_port()
            fault = time.monotonic()
            topology.node_on(old).kill()
            promoted = None
            while time.monotonic() - fault < 30:
                if topology.primary_port() != old:
                    promoted = time.monotonic()
                    break
                time.sleep(0.05)
            time.sleep(5)
            result = report(
                "redis-primary-kill-sentinel",
                load.samples,
                start,
                fault,
                promoted or time.monotonic(),
                promoted_after_s=round(promoted - fault, 3) if promoted else None,
                recovery_from_kill_s=recovered(load.samples, fault),
            )
        # After recovery: the signed-in are still signed in, the signed-out still out.
        after = {
            kind: requests.get(f"{url}/auth", headers=FILE, cookies=jar, timeout=5).status_code
            for kind, jar in cookies.items()
        }
        print(json.dumps({"scenario": "after-primary-kill", "statuses": after}), flush=True)
        return result
    finally:
        gatekeeper.stop()
        topology.stop()


def recovered(samples, since: float) -> float | None:
    """Seconds from ``since`` to the qualified researcher's 200 after which all are 200."""
    qualified = [s for s in samples if s[2] == "qualified" and s[0] >= since]
    for index, sample in enumerate(qualified):
        if all(s[3] == 200 for s in qualified[index:]):
            return round(sample[0] - since, 3)
    return None


def main(scenarios: list[str]):
    tmp = Path(tempfile.mkdtemp(prefix="gk-faults-"))
    base_url, shutdown = serve_in_thread(create_app(clients=[EMULATOR_CLIENT]))
    orcid = Emulator(base_url)
    try:
        if not scenarios or "redis" in scenarios or "orcid" in scenarios:
            single_redis(tmp, orcid)
        if not scenarios or "sentinel" in scenarios:
            sentinel_primary_kill(tmp, orcid)
    finally:
        shutdown()


def single_redis(tmp: Path, orcid: Emulator):
    """The hang, the kill and restart, and the ORCID stall, on one redis-server."""
    redis_server = RedisServer(tmp)
    port = free_port()
    env = gatekeeper_env(
        tmp, orcid, redis_server.url, f"http://127.0.0.1:{port}", GUNICORN_THREADS="4"
    )
    gatekeeper = Gatekeeper(env, port, workers=2)
    url = gatekeeper.url
    try:
        cookies = {
            "qualified": signed_in(url, "qualified"),
            "unqualified": signed_in(url, "self-asserted"),
            "signed-out": signed_out(url),
        }
        with Load(url, cookies) as load:
            time.sleep(3)  # every worker has every answer
            start = time.monotonic()
            time.sleep(3)
            fault = time.monotonic()
            redis_server.process.send_signal(signal.SIGSTOP)
            time.sleep(5)
            redis_server.process.send_signal(signal.SIGCONT)
            cleared = time.monotonic()
            time.sleep(5)
            report("redis-hang-5s", load.samples, start, fault, cleared)

            start = time.monotonic()
            time.sleep(2)
            fault = time.monotonic()
            redis_server.stop()
            time.sleep(3)
            redis_server.start()  # empty: every session is gone, by design
            cleared = time.monotonic()
            login = None
            while time.monotonic() - cleared < 15:
                response = requests.get(f"{url}/login", allow_redirects=False, timeout=5)
                if response.status_code == 302:
                    login = round(time.monotonic() - cleared, 3)
                    break
                time.sleep(0.05)
            cookies["qualified"] = signed_in(url, "qualified")  # the researcher signs in again
            time.sleep(3)
            report(
                "redis-kill-restart",
                load.samples,
                start,
                fault,
                cleared,
                sign_in_works_again_s=login,
            )
        # A fresh load for the stall: new sessions after the restart.
        cookies = {
            "qualified": signed_in(url, "qualified"),
            "unqualified": signed_in(url, "self-asserted"),
            "signed-out": signed_out(url),
        }
        cold = [signed_in(url, persona) for persona in COLD]
        with Load(url, cookies) as load:
            time.sleep(3)
            start = time.monotonic()
            orcid.faults(latency_ms=6000, endpoints=["qualifications"])
            fault = time.monotonic()
            burst = [(jar, name) for jar in cold for name in ("sail-cohort", "survey-microdata")]
            burst = burst * 4  # 48 checks of 12 cold (researcher, dataset) pairs

            def check(pair):
                jar, name = pair
                started = time.monotonic()
                try:
                    status = requests.get(
                        f"{url}/auth?dataset={name}", cookies=jar, timeout=30
                    ).status_code
                except requests.RequestException:
                    status = 0
                return time.monotonic() - started, status

            with concurrent.futures.ThreadPoolExecutor(len(burst)) as pool:
                answers = list(pool.map(check, burst))
            orcid.faults()
            cleared = time.monotonic()
            time.sleep(3)
            report(
                "orcid-6s-stall-48-cold",
                load.samples,
                start,
                fault,
                cleared,
                cold_slowest_s=round(max(a[0] for a in answers), 2),
                cold_budget_s=ORCID_TIMEOUT + 1,
                cold_statuses={str(s): sum(1 for a in answers if a[1] == s) for s in (200, 403, 0)},
                cold_wrong=sum(1 for a in answers if a[1] not in (200, 403)),
            )
    finally:
        gatekeeper.stop()
        redis_server.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
