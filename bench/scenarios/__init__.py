"""The benchmark's scenarios, one module each; ``bench/run.py --scenario NAME`` runs one.

Each module has ``TITLE`` (one line), ``NEEDS_NGINX`` and ``run(ctx) -> harness.Report``,
and starts and stops its own servers through ``ctx.procs`` (bench/harness.py).
"""

from __future__ import annotations

import importlib

# name -> module, in the order `make bench` runs them.
SCENARIOS = {
    "auth": "auth",
    "token": "token",
    "cold": "cold",
    "nginx": "nginx",
    "nginx-cache": "nginx_cache",
    "caddy": "caddy",
    "traefik": "traefik",
    "envoy": "envoy",
    "servers": "servers",
}


def load(name: str):
    return importlib.import_module(f"bench.scenarios.{SCENARIOS[name]}")
