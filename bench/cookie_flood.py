"""A gunicorn worker's memory under a flood of distinct garbage session cookies.

    .venv/bin/python bench/cookie_flood.py                    # 100,000 cookies, ~1 minute
    .venv/bin/python bench/cookie_flood.py --repo /tmp/old    # the same against another checkout

Starts one gunicorn worker serving ``app:create_app()`` (the repository's gunicorn.conf.py,
no Redis) on a free loopback port, sends ``GET /auth`` as nginx would, each with a session
cookie never sent before (random text, or a real cookie's shape with a forged signature),
and reads the worker's resident memory (VmRSS) from /proc as it goes. Every answer must
be 401. It passes when the RSS after the flood is within 10% of the RSS after a warm-up.
Bounded in time (``--max-seconds``); the gunicorn it started is stopped by its pid at the
end, also on a failure or Ctrl-C. What it measures, and the figures: bench/README.md.
"""

from __future__ import annotations

import argparse
import http.client
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ORIGINAL_URI = "/datasets/sail-cohort/file.csv"
TOLERANCE = 0.10  # the target: RSS flat within 10%


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def worker_of(master: int) -> int:
    """The pid of the gunicorn master's one worker."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == master:
                return int(entry.name)
    raise RuntimeError(f"gunicorn {master} has no worker")


def garbage_cookie(number: int) -> str:
    """A cookie never sent before: random text of 40 to 3,000 bytes, or a forged session."""
    if number % 2:
        return f"{number}.{secrets.token_urlsafe(30 + number % 2_200)}"
    # itsdangerous' shape (payload.timestamp.signature), with a signature nobody made
    return f".eJ{secrets.token_urlsafe(120 + number % 600)}.{number:x}.{secrets.token_urlsafe(20)}"


class Flood:
    """``threads`` keep-alive connections sending one new cookie per request."""

    def __init__(self, port: int, threads: int):
        self.port, self.threads = port, threads
        self.sent = 0
        self.unexpected: list[str] = []
        self.lock = threading.Lock()

    def send(self, count: int, deadline: float):
        numbers = iter(range(self.sent, self.sent + count))

        def run():
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                while time.monotonic() < deadline:
                    with self.lock:
                        number = next(numbers, None)
                    if number is None:
                        return
                    headers = {
                        "Cookie": f"gatekeeper_session={garbage_cookie(number)}",
                        "X-Original-URI": ORIGINAL_URI,
                    }
                    try:
                        connection.request("GET", "/auth", headers=headers)
                        response = connection.getresponse()
                        response.read()
                    except (OSError, http.client.HTTPException):
                        connection.close()  # the server closed a kept-alive connection
                        connection.request("GET", "/auth", headers=headers)
                        response = connection.getresponse()
                        response.read()
                    if response.status != 401:
                        with self.lock:
                            self.unexpected.append(str(response.status))
            finally:
                connection.close()

        workers = [threading.Thread(target=run) for _ in range(self.threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        self.sent += count
        if time.monotonic() >= deadline:
            raise TimeoutError("the flood did not finish within --max-seconds")
        if self.unexpected:
            raise RuntimeError(f"answers other than 401: {sorted(set(self.unexpected))}")


def start_gunicorn(repo: Path, port: int, threads: int, log) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCID_", "GUNICORN_"))}
    env.pop("REDIS_URL", None)
    env.update(
        SECRET_KEY="bench-cookie-flood-secret-key-0123456789",
        ORCID_CLIENT_ID="APP-ABCDEFGHIJKLMNOP",
        ORCID_CLIENT_SECRET="bench-secret",
        POLICY_PATH=str(repo / "policies"),
        GUNICORN_WORKERS="1",
        GUNICORN_THREADS=str(threads),
        GUNICORN_LOGLEVEL="warning",
        PYTHONPATH=str(repo),
    )
    bind = f"127.0.0.1:{port}"
    return subprocess.Popen(
        [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "app:create_app()", "-b", bind],
        cwd=repo,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_up(port: int, process: subprocess.Popen, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"gunicorn did not answer within {timeout:.0f}s")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cookies", type=int, default=100_000, help="distinct cookies")
    parser.add_argument("--warm-up", type=int, default=5_000, help="cookies before the baseline")
    parser.add_argument("--samples", type=int, default=10, help="RSS readings during the flood")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads (1: sync)")
    parser.add_argument("--clients", type=int, default=4, help="client connections")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="give up after this")
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout to serve")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    repo = args.repo.resolve()
    deadline = time.monotonic() + args.max_seconds
    port = free_port()
    log = tempfile.NamedTemporaryFile("w", prefix="cookie-flood-", suffix=".log", delete=False)
    process = start_gunicorn(repo, port, args.threads, log)
    try:
        wait_up(port, process)
        worker = worker_of(process.pid)
        flood = Flood(port, args.clients)
        started = rss_kib(worker)
        flood.send(args.warm_up, deadline)
        baseline = rss_kib(worker)
        print(f"gunicorn ({repo}), 1 worker, threads={args.threads}, pid {worker}")
        print(f"RSS at start {started:,} KiB; after {args.warm_up:,} warm-up: {baseline:,} KiB")
        began = time.monotonic()
        step = args.cookies // args.samples
        readings = []
        for index in range(args.samples):
            flood.send(step if index < args.samples - 1 else args.cookies - step * index, deadline)
            readings.append(rss_kib(worker))
            print(f"  after {flood.sent - args.warm_up:>7,} more: {readings[-1]:,} KiB")
        elapsed = time.monotonic() - began
        growth = readings[-1] / baseline - 1
        peak = max(readings) / baseline - 1
        print(
            f"{args.cookies:,} distinct garbage cookies in {elapsed:.1f} s "
            f"({args.cookies / elapsed:,.0f}/s), every answer 401"
        )
        print(f"RSS growth: {growth:+.1%} at the end, {peak:+.1%} at the peak (target: within 10%)")
        return 0 if peak <= TOLERANCE else 1
    except (RuntimeError, TimeoutError) as exc:
        print(f"cookie_flood: {exc} (gunicorn log: {log.name})", file=sys.stderr)
        return 1
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # quick shutdown: clients are done
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


if __name__ == "__main__":
    sys.exit(main())
