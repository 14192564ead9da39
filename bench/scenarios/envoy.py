"""envoy: a small file through Envoy, protected by `ext_authz` against unprotected.

The docs' config for Envoy (docs/proxies/), rendered as tests/integration/proxies.py
does, plus one unprotected route to the same file server. How: bench/scenarios/_proxy.py.
"""

from __future__ import annotations

from bench.harness import Context, Report
from bench.scenarios._proxy import measure

TITLE = "a file through Envoy ext_authz vs unprotected"
NEEDS_NGINX = True  # the file server


def run(ctx: Context) -> Report:
    return measure(ctx, "envoy", label="Envoy")
