"""traefik: a small file through Traefik, protected by `forwardAuth` against unprotected.

The docs' config for Traefik (docs/proxies/), rendered as tests/integration/proxies.py
does, plus one unprotected route to the same file server. How: bench/scenarios/_proxy.py.
"""

from __future__ import annotations

from bench.harness import Context, Report
from bench.scenarios._proxy import measure

TITLE = "a file through Traefik forwardAuth vs unprotected"
NEEDS_NGINX = True  # the file server


def run(ctx: Context) -> Report:
    return measure(ctx, "traefik", label="Traefik")
