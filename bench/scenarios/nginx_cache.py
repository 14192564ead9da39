"""nginx-cache: the same as ``nginx``, with docs/proxies/nginx.conf exactly as shipped.

Once the docs hold an ``auth_request`` answer cache (``proxy_cache`` on the
``/_gatekeeper/auth`` location, its lifetime set by the gatekeeper's ``X-Accel-Expires``),
nginx answers most checks itself; its ``proxy_cache_path`` (the literal
``/var/cache/nginx/orcid-gatekeeper``) goes to a temporary folder. Without one, this
measures what ``nginx`` does, and says so. How: bench/scenarios/_proxy.py.
"""

from __future__ import annotations

from bench.harness import Context, Report
from bench.scenarios._proxy import TARGET_RATIO, measure

TITLE = "a file through nginx auth_request with the docs' answer cache vs unprotected"
NEEDS_NGINX = True


def run(ctx: Context) -> Report:
    return measure(
        ctx, "nginx", nginx_cache=True, target=TARGET_RATIO, label="nginx, docs config as shipped"
    )
