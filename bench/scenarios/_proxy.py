"""What the proxy scenarios share: a protected file against the same file unprotected.

Each proxy runs the config in docs/proxies/, rendered by tests/integration/proxies.py
(the addresses swapped for loopback ports, as the integration tests run it), in front of
a gatekeeper (gunicorn, the repo's gunicorn.conf.py, PUBLIC_URL the proxy's URL) and of
an nginx serving one small static file (bench/harness.py ``start_file_server``). To the
rendered config we add one route that is not protected, to the same file server:

- nginx: a second ``server`` block in the wrapper config (the docs' server block is left
  as it is), listening on its own loopback port, with a ``location /public/`` that
  proxies to the docs' ``upstream datasets`` as the docs' ``/datasets/`` location does,
  minus ``auth_request``, with the same access log format.
- Caddy: ``handle /public/* { reverse_proxy FILES }`` in the site block.
- Traefik: a router ``PathPrefix(`/public/`)`` to the docs' ``datasets`` service, with
  no middleware.
- Envoy: a route ``prefix: /public/`` to the ``datasets`` cluster, ext_authz disabled.

A qualified researcher signs in through the proxy; the cached, allowed check is then
measured as wrk sees it: ``wrk -t2 -c32`` on the protected URL (with the cookie), the
unprotected URL and the file server directly (the same headers), in alternating rounds.
Reported: req/s, p50, p99, the CPU per request of the proxy, the gatekeeper's workers and
the file server, and how many checks the gatekeeper answered per file request.
"""

from __future__ import annotations

import re

from bench.harness import (
    FILE_BYTES,
    ORIGINAL_URI,
    QUALIFIED,
    UNPROTECTED_URI,
    BenchError,
    Context,
    Report,
    Watch,
    WrkResult,
    auth_checks,
    auth_headers,
    disturbed,
    free_port,
    median_cpu,
    median_of,
    met,
    ms,
    nginx_temp_paths,
    num,
    run_wrk,
    say,
    sign_in,
    start_file_server,
    start_gunicorn,
    start_stack,
    table,
    undisturbed,
    us,
)

TARGET_RATIO = 0.50  # nginx: protected at least half of unprotected (the issue's target)
CACHE_PATH = "/var/cache/nginx/orcid-gatekeeper"  # the docs' proxy_cache_path, once there
CACHE_DIRECTIVE = re.compile(r"^[ \t]*proxy_cache[ \t]+[^;]*;[^\n]*\n?", re.MULTILINE)


def docs_proxies():
    try:
        from tests.integration import proxies
    except ImportError as exc:  # the [test] extras
        raise BenchError(
            f"tests/integration/proxies.py cannot be imported ({exc}): run `make install`", code=2
        ) from None
    return proxies


def has_auth_cache(text: str) -> bool:
    """Whether an nginx config (comments aside) turns ``proxy_cache`` on anywhere."""
    settings = "\n".join(line.split("#", 1)[0] for line in text.splitlines()) + "\n"
    return any("off" not in m.group(0).split() for m in CACHE_DIRECTIVE.finditer(settings))


def proxy_class(kind: str, *, nginx_cache: bool = True):
    """The class from tests/integration/proxies.py for ``kind``, with the unprotected route."""
    proxies = docs_proxies()
    problem = proxies.missing_binary(kind)
    if problem:
        raise BenchError(problem, code=2)

    if kind == "nginx":

        class BenchNginx(proxies.Nginx):
            """The docs' server block as the tests render it, in a wrapper of our own."""

            cache = nginx_cache
            cache_found = False  # set when the config is written

            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self.unprotected_port = free_port()

            @property
            def unprotected_url(self) -> str:
                return f"http://127.0.0.1:{self.unprotected_port}"

            def command(self):
                argv = super().command()  # writes gatekeeper.conf and a wrapper we replace
                site = self.tmp / "gatekeeper.conf"
                text = site.read_text().replace(CACHE_PATH, str(self.tmp / "auth-cache"))
                self.cache_found = has_auth_cache(text)
                if not self.cache:
                    text = CACHE_DIRECTIVE.sub("", text)
                site.write_text(text)
                (self.tmp / "nginx.conf").write_text(
                    "daemon off;\n"
                    "worker_processes auto;\n"  # Debian's default: one per core
                    f"pid {self.tmp}/nginx.pid;\n"
                    f"error_log {self.log_path} warn;\n"
                    "events { worker_connections 1024; }\n"
                    "http {\n"
                    f"    access_log {self.tmp}/nginx-other-access.log;\n"
                    f"{nginx_temp_paths(self.tmp)}"
                    f"    include {site};\n"
                    "    # bench/: the same file, not protected, as the docs' /datasets/ minus\n"
                    "    # auth_request (the docs' upstream and log format).\n"
                    "    server {\n"
                    f"        listen 127.0.0.1:{self.unprotected_port};\n"
                    "        server_tokens off;\n"
                    "        uninitialized_variable_warn off;\n"
                    f"        access_log {self.tmp}/nginx-unprotected.log gatekeeper;\n"
                    "        location /public/ {\n"
                    "            proxy_pass http://datasets;\n"
                    "            proxy_set_header Host $host;\n"
                    "            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
                    "            proxy_set_header X-Forwarded-Proto $scheme;\n"
                    "        }\n"
                    "        location / { return 404; }\n"
                    "    }\n"
                    "}\n"
                )
                return argv

        return BenchNginx

    if kind == "caddy":

        class BenchCaddy(proxies.Caddy):
            unprotected_url = property(lambda self: self.url)

            def command(self):
                argv = super().command()
                config = self.tmp / "Caddyfile"
                text = config.read_text()
                anchor = "\tbind 127.0.0.1\n"
                if anchor not in text:
                    raise BenchError(f"the rendered Caddyfile has no {anchor!r} to add a route to")
                route = (
                    f"\n\t# bench/: the same file, not protected.\n\thandle /public/* {{\n"
                    f"\t\treverse_proxy {self.files}\n\t}}\n"
                )
                config.write_text(text.replace(anchor, anchor + route, 1))
                return argv

        return BenchCaddy

    if kind == "traefik":

        class BenchTraefik(proxies.Traefik):
            unprotected_url = property(lambda self: self.url)

            def command(self):
                import yaml

                argv = super().command()
                dynamic = self.tmp / "traefik-dynamic.yaml"
                config = yaml.safe_load(dynamic.read_text())
                routers = config["http"]["routers"]
                if "datasets" not in config["http"].get("services", {}):
                    raise BenchError("traefik-dynamic.yaml has no `datasets` service")
                routers["bench-unprotected"] = {
                    "rule": "PathPrefix(`/public/`)",
                    "priority": 15,
                    "service": "datasets",
                }
                dynamic.write_text(yaml.safe_dump(config, sort_keys=False))
                return argv

        return BenchTraefik

    if kind == "envoy":

        class BenchEnvoy(proxies.Envoy):
            unprotected_url = property(lambda self: self.url)

            def command(self):
                import yaml

                argv = super().command()
                path = self.tmp / "envoy.yaml"
                config = yaml.safe_load(path.read_text())
                listener = config["static_resources"]["listeners"][0]
                manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
                routes = manager["route_config"]["virtual_hosts"][0]["routes"]
                disabled = {
                    "envoy.filters.http.ext_authz": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz"
                        ".v3.ExtAuthzPerRoute",
                        "disabled": True,
                    }
                }
                route = {
                    "match": {"prefix": "/public/"},
                    "route": {"cluster": "datasets"},
                    "typed_per_filter_config": disabled,
                }
                routes.insert(0, route)
                path.write_text(yaml.safe_dump(config, sort_keys=False))
                return argv

        return BenchEnvoy

    raise BenchError(f"no proxy {kind!r}")


def measure(
    ctx: Context,
    kind: str,
    *,
    nginx_cache: bool = True,
    target: float | None = None,
    label: str | None = None,
) -> Report:
    """Protected against unprotected through ``kind``; ``target``: the ratio to hold to."""
    import requests

    args = ctx.args
    threads = ctx.threads([4])[0]
    cls = proxy_class(kind, nginx_cache=nginx_cache)
    stack = start_stack(ctx.procs)
    files = start_file_server(ctx.procs)
    tmp = ctx.logs / kind
    tmp.mkdir()
    port, gk_port = free_port(), free_port()
    proxy = cls(tmp, port, gk_port, files.port)
    gk = start_gunicorn(
        ctx.procs,
        stack,
        "gatekeeper",
        threads=threads,
        workers=args.workers,
        port=gk_port,
        public_url=proxy.url,
    )
    ctx.procs.on_stop(kind, proxy.stop)
    ctx.wait_quiet()
    try:
        proxy.start()
    except RuntimeError as exc:
        raise BenchError(f"{kind} did not start: {exc}") from None
    label = label or kind
    urls = {
        "protected": proxy.url + ORIGINAL_URI,
        "unprotected": proxy.unprotected_url + UNPROTECTED_URI,
        "file server alone": files.url + UNPROTECTED_URI,
    }
    cookie, _ = sign_in(proxy.url, QUALIFIED)
    headers = auth_headers(cookie)
    del headers["X-Original-URI"]  # the proxy says which URL it is about to serve
    for name, url in urls.items():
        answer = requests.get(url, headers=headers, allow_redirects=False, timeout=30)
        if answer.status_code != 200 or answer.content != files.content:
            raise BenchError(
                f"{kind}: GET {url} ({name}, signed in) answered "
                f"{answer.status_code}, not 200 with the file"
            )
    # The check is on: a request without the cookie is not served, and never from a cache.
    answer = requests.get(urls["protected"], allow_redirects=False, timeout=30)
    if answer.status_code == 200:
        raise BenchError(f"{kind}: {urls['protected']} was served without a session cookie")
    say(f"{kind}: the protected file answers 200 signed in, {answer.status_code} signed out")
    for _ in range(40):  # every worker memorises the answer
        requests.get(urls["protected"], headers=headers, timeout=30)
    # nginx: the master and its workers; the others are one process each.
    watch = {"proxy": Watch(proxy.process.pid), "gatekeeper": gk.watch, "files": files.watch}
    wrk = dict(threads=args.wrk_threads, connections=args.connections)
    for url in urls.values():
        run_wrk(url, headers, seconds=args.warmup, **wrk)

    runs: dict[str, list[WrkResult]] = {name: [] for name in urls}
    for round_ in range(1, args.rounds + 1):

        def one_round():
            out = []
            for url in urls.values():
                before = auth_checks(gk.url)
                result = run_wrk(url, headers, seconds=args.duration, watch=watch, **wrk)
                checks = (auth_checks(gk.url) - before) / result.requests
                result.extra["gatekeeper_checks_per_request"] = checks
                out.append(result)
            return tuple(out)

        results = undisturbed(one_round, args, f"round {round_}")
        for name, result in zip(urls, results, strict=True):
            runs[name].append(result)
        p, u = results[0], results[1]
        say(
            f"round {round_}: protected {p.rps:6.0f} req/s | unprotected {u.rps:6.0f} req/s | "
            f"file server alone {results[2].rps:6.0f} req/s | ratio {p.rps / u.rps:.0%} | "
            f"other work {max(r.other_cores for r in results):.2f} cores"
        )
    return report(ctx, kind, label, proxy, gk, runs, target)


def report(ctx, kind, label, proxy, gk, runs, target) -> Report:
    args = ctx.args
    rows = []
    for name, results in runs.items():
        checks = [r.extra["gatekeeper_checks_per_request"] for r in results]
        rows.append(
            [
                name,
                num(median_of(results, "rps")),
                ms(median_of(results, "p50_ms")),
                ms(median_of(results, "p99_ms")),
                us(median_cpu(results, "proxy")) if name != "file server alone" else "–",
                us(median_cpu(results, "gatekeeper")) if name == "protected" else "–",
                us(median_cpu(results, "files")),
                f"{sorted(checks)[len(checks) // 2]:.4f}",
                " / ".join(num(r.rps) for r in results)
                + (" (disturbed)" if disturbed(results, args) else ""),
            ]
        )
    protected = median_of(runs["protected"], "rps")
    ratio = protected / median_of(runs["unprotected"], "rps")
    alone = protected / median_of(runs["file server alone"], "rps")
    ok = target is None or ratio >= target
    verdict = f" (target ≥ {target:.0%}: {met(ok)})" if target is not None else ""
    cache_note = ""
    if kind == "nginx":
        found = getattr(proxy, "cache_found", False)
        if proxy.cache:
            cache_note = (
                "\n\nThe docs' nginx.conf as shipped: its `auth_request` answer cache "
                "(`proxy_cache`) is on."
                if found
                else "\n\n**docs/proxies/nginx.conf has no `auth_request` answer cache yet** "
                "(no `proxy_cache` directive): every file request is checked by the "
                "gatekeeper, as in the `nginx` scenario."
            )
        else:
            cache_note = (
                "\n\nThe docs' nginx.conf with its `proxy_cache` directives removed, so "
                "every file request is checked by the gatekeeper."
                if found
                else "\n\nThe docs' nginx.conf as shipped (it has no `auth_request` answer "
                "cache): every file request is checked by the gatekeeper."
            )
    unprotected_how = (
        "a second server block on its own port, `location /public/` proxying to the docs' "
        "`upstream datasets`"
        if kind == "nginx"
        else "a route for `/public/` to the same file server, added to the rendered config"
    )
    markdown = (
        f"`wrk -t{args.wrk_threads} -c{args.connections} -d{args.duration:g}s`, a "
        f"{FILE_BYTES:,}-byte static file, the three URLs in alternating rounds, median "
        f"of {args.rounds} round(s). Protected: `{ORIGINAL_URI}` through {label} with the "
        f"session cookie (a cached, allowed check). Unprotected: the same file through the "
        f"same {kind} on `{UNPROTECTED_URI}` ({unprotected_how}). File server alone: nginx "
        f"serving the file, no proxy. Gatekeeper: {gk.command}."
        + cache_note
        + "\n\n"
        + table(
            [
                "URL",
                "req/s",
                "p50",
                "p99",
                f"{kind} CPU per request",
                "gatekeeper CPU per request",
                "file server CPU per request",
                "checks per request",
                "rounds (req/s)",
            ],
            rows,
            "lrrrrrrrl",
        )
        + f"\n\n**Protected / unprotected through {label}: {ratio:.1%}**{verdict}. "
        f"Protected / the file server alone: {alone:.1%}.\n\n"
        "Command (ports and the cookie elided):\n\n```\n" + runs["protected"][0].command + "\n```\n"
    )
    data = {
        "proxy": kind,
        "label": label,
        "nginx_auth_cache": getattr(proxy, "cache_found", None) and getattr(proxy, "cache", None),
        "ratio_protected_unprotected": ratio,
        "ratio_protected_file_server_alone": alone,
        "gatekeeper": gk.command,
        "runs": {name: [r.as_dict() for r in results] for name, results in runs.items()},
    }
    return Report(markdown, data, ok)
