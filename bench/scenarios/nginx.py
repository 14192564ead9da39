"""nginx: a small file through nginx, protected by auth_request against unprotected.

docs/proxies/nginx.conf rendered as tests/integration/proxies.py does, with any
``auth_request`` answer cache it holds (``proxy_cache``) taken out: every file request
is checked by the gatekeeper, so this is the gatekeeper's own speed as nginx sees it.
``nginx-cache`` measures the config as shipped. How: bench/scenarios/_proxy.py.
"""

from __future__ import annotations

from bench.harness import Context, Report
from bench.scenarios._proxy import TARGET_RATIO, measure

TITLE = "a file through nginx auth_request (every request checked) vs unprotected"
NEEDS_NGINX = True


def run(ctx: Context) -> Report:
    return measure(
        ctx, "nginx", nginx_cache=False, target=TARGET_RATIO, label="nginx, no answer cache"
    )
