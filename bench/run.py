"""Run the benchmark's scenarios: each starts its servers on loopback, measures, and stops them.

    .venv/bin/python bench/run.py                          # every scenario, in order
    .venv/bin/python bench/run.py --scenario nginx-cache   # one (or a comma-separated list)
    .venv/bin/python bench/run.py --quick                  # smoke runs: 3 s, 1 round
    .venv/bin/python bench/run.py --list                   # the scenarios, one line each

Each scenario prints its table (markdown) and writes it, with every figure as JSON, to
bench/results/<scenario>.md and .json. The parts they share are in bench/harness.py; the
scenarios are in bench/scenarios/. Installs nothing: a missing wrk, redis-server or nginx
is one line and exit 2. What is measured, and how to read it: bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import signal
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, not bench/

from bench import harness
from bench.harness import BenchError, say
from bench.scenarios import SCENARIOS, load


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="scenarios: " + ", ".join(SCENARIOS),
    )
    parser.add_argument(
        "--scenario",
        default="",
        help="scenarios to run, comma-separated (default: all, in the order of --list)",
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke runs: 3 s runs, 1 round, 3 cold checks, at most 10 s waiting for quiet",
    )
    parser.add_argument(
        "--threads",
        default="",
        help="GUNICORN_THREADS values, comma-separated: 1 is the sync worker, more is "
        "gthread (default: per scenario: 1,4 for auth and cold, 4, the repo's default, "
        "for the others)",
    )
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default: 2)")
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of wrk warm-up")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds; the median is reported"
    )
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--paced-connections",
        type=int,
        default=16,
        help="auth: wrk threads = connections for the half-load run",
    )
    parser.add_argument("--cold", type=int, default=10, help="cold: decisions to time")
    parser.add_argument(
        "--latency-ms",
        type=int,
        default=50,
        help="cold: latency the emulator adds to each record read",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=300,
        help="seconds to wait, before each run, for other work on the machine to settle "
        "(default: 300)",
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
    parser.add_argument(
        "--results",
        type=Path,
        default=harness.RESULTS,
        help="folder for <scenario>.md and .json (default: bench/results)",
    )
    parser.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the servers' logs (always kept after a failure)",
    )
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.quick:  # shorter defaults; an option given on the command line stays
        quick = dict(duration=3, warmup=1, rounds=1, cold=3, wait_quiet=10, retries=1)
        for name, value in quick.items():
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
    try:
        args.threads = [int(t) for t in args.threads.split(",")] if args.threads else []
    except ValueError:
        parser.error("--threads: comma-separated whole numbers, such as 1,4")
    if any(t < 1 for t in args.threads) or min(args.workers, args.rounds, args.cold) < 1:
        parser.error("--threads, --workers, --rounds and --cold must be at least 1")
    names = [n.strip() for n in args.scenario.split(",") if n.strip()] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"no scenario {', '.join(unknown)}; there are: {', '.join(SCENARIOS)}")
    args.scenarios = names
    return args


def require_tools(names: list[str]):
    tools = ["wrk", "redis-server"]
    if any(load(n).NEEDS_NGINX for n in names):
        tools.append(harness.NGINX)
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        packages = " ".join(Path(t).name for t in missing)
        raise BenchError(
            f"{' and '.join(missing)} not found; install with `apt-get install -y {packages}` "
            "and run again",
            code=2,
        )
    if not (harness.BIN / "gunicorn").exists():
        raise BenchError(
            f"{harness.BIN / 'gunicorn'} not found: run with the project's venv "
            "(.venv/bin/python bench/run.py) after `make install`",
            code=2,
        )


def command_line(args, name: str) -> str:
    """The command that reruns this scenario with this run's options."""
    skip, rest = False, []
    for word in args.argv:
        if skip:
            skip = False
        elif word == "--scenario":
            skip = True
        elif not word.startswith("--scenario="):
            rest.append(word)
    return " ".join([".venv/bin/python bench/run.py --scenario", name, *map(shlex.quote, rest)])


def run_scenario(name: str, args, info: dict) -> str:
    module = load(name)
    info = {**info, "date": harness.machine_date()}  # when this scenario started
    logs = Path(tempfile.mkdtemp(prefix=f"gatekeeper-bench-{name}-"))
    logs.chmod(0o755)  # nginx's workers (not root) read the file and write the auth cache here
    procs = harness.Processes(logs)
    ctx = harness.Context(args, procs, info)
    ok = False
    try:
        say(f"\n##### {name}: {module.TITLE} (logs in {logs})")
        report = module.run(ctx)
        command = command_line(args, name)
        header = (
            f"## {name}: {module.TITLE}\n\n"
            f"{info['date']}, {info['cpu']}, {info['os']}; Python {info['python']}, "
            f"gunicorn {info['gunicorn']}, Flask {info['flask']}, {info['wrk']}, "
            f"{info['redis']}.\n\n```console\n$ {command}\n```\n\n"
        )
        markdown = header + report.markdown.strip() + "\n"
        args.results.mkdir(parents=True, exist_ok=True)
        (args.results / f"{name}.md").write_text(markdown)
        options = {k: v for k, v in vars(args).items() if k not in ("argv", "results")}
        data = {
            "scenario": name,
            "command": command,
            "machine": info,
            "options": options,
            "targets_met": report.ok,
            **report.data,
        }
        (args.results / f"{name}.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
        say("\n" + markdown)
        say(f"(written to {args.results}/{name}.md and .json)")
        ok = True
        return "done, targets met" if report.ok else "done, some targets NOT met"
    finally:
        procs.stop_all()
        if ok and not args.keep_logs:
            shutil.rmtree(logs, ignore_errors=True)
        elif not ok:
            print(f"bench: {name}: the servers' logs are in {logs}", file=sys.stderr)


def _interrupt(signum, frame):
    # SIGTERM stops the run as Ctrl-C does, so the finally clauses still stop the servers.
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list:
        for name in SCENARIOS:
            say(f"{name:<12} {load(name).TITLE}")
        return 0
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        require_tools(args.scenarios)
        info = harness.machine()
        say(f"orcid-gatekeeper benchmark, {info['date']}, {info['cpu']}: {args.scenarios}")
        outcomes = {}
        for name in args.scenarios:
            try:
                outcomes[name] = run_scenario(name, args, info)
            except BenchError as exc:
                print(f"bench: {name}: {exc}", file=sys.stderr)
                if exc.code == 2:
                    return 2
                outcomes[name] = f"FAILED: {exc}"
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("bench: interrupted; the servers were stopped", file=sys.stderr)
        return 130
    say("")
    for name, outcome in outcomes.items():
        say(f"{name:<12} {outcome}")
    # Targets missed are figures, not failures: exit 1 only when a scenario could not run.
    return 1 if any(o.startswith("FAILED") for o in outcomes.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
