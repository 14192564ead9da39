"""Write docs/deploy/nginx.conf: docs/proxies/nginx.conf with compose.yaml's addresses.

The reference deployment runs the nginx config the proxy tests run, not a copy of it.
Only the addresses differ: compose's service names for the loopback ones, and the
access log on nginx's stdout, where `docker compose logs` finds it. After editing
docs/proxies/nginx.conf, run `python docs/deploy/derive_nginx_conf.py`;
tests/unit/test_deploy_files.py fails until the two agree.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent / "proxies" / "nginx.conf"
TARGET = HERE / "nginx.conf"

# Each literal of the tested config, and what it is in compose.yaml's network.
SUBSTITUTIONS = {
    # Docker's DNS answers a service's name with the address of every replica, and
    # nginx makes each one a server of the upstream: every gatekeeper takes checks.
    "server 127.0.0.1:8000;": "server gatekeeper:8000;",
    "server 127.0.0.1:8081;": "server datasets:80;",
    "access_log /var/log/nginx/orcid-gatekeeper.access.log": "access_log /dev/stdout",
}

HEADER = """\
# GENERATED from docs/proxies/nginx.conf by docs/deploy/derive_nginx_conf.py: edit that
# file, then run `python docs/deploy/derive_nginx_conf.py`.
#
# The reference deployment's nginx (compose.yaml mounts this file as
# /etc/nginx/conf.d/default.conf): the tested auth_request setup, with
#   gatekeeper:8000  every replica of the gatekeeper service (nginx resolves the name when
#                    it starts: after `docker compose up --scale gatekeeper=N`, restart nginx)
#   datasets:80      the server that holds the files, under /datasets/<name>/...
#   8080             the port browsers reach (put TLS in front, or `listen 443 ssl`)
"""


def derive(source: str) -> str:
    """The deployment's config made from the tested one's text.

    :raises ValueError: naming every literal the tested config no longer contains.
    """
    missing = [literal for literal in SUBSTITUTIONS if literal not in source]
    if missing:
        raise ValueError(
            f"docs/proxies/nginx.conf no longer contains {missing}: update SUBSTITUTIONS in "
            "docs/deploy/derive_nginx_conf.py"
        )
    # The tested file's opening comment speaks of its loopback addresses: ours replaces it.
    lines = source.splitlines(keepends=True)
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    text = "".join(lines)
    for literal, value in SUBSTITUTIONS.items():
        text = text.replace(literal, value)
    return HEADER + text


def main(argv: list[str]) -> int:
    derived = derive(SOURCE.read_text())
    if argv == ["--check"]:
        if TARGET.read_text() != derived:
            print(f"{TARGET} is out of date: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(derived)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
