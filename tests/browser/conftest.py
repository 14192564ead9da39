"""Debian's Chromium, driven by Playwright, against `gatekeeper demo` on loopback ports.

A missing browser or Playwright fails loudly: these tests never skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import requests

from tests.integration.conftest import BIN, REPO, free_port, stop, wait_until

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = REPO / "docs" / "screenshots"
VIEWPORT = {"width": 1200, "height": 800}

# NOTE: CI has no network, and as root Chromium refuses to start with its sandbox. The
# other flags stop it phoning Google (updates, sync, QUIC probes) and using a GPU the
# runner lacks. Playwright already gives each launch a fresh temporary profile, and it
# refuses a --user-data-dir argument, so there is none here.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-gpu",
    "--disable-quic",
    "--no-proxy-server",
]


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """`gatekeeper demo` as a subprocess; yields its base URL."""
    port, orcid_port = free_port(), free_port()
    log_path = tmp_path_factory.mktemp("demo") / "demo.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [str(BIN / "gatekeeper"), "demo", "--port", str(port), "--orcid-port", str(orcid_port)],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: requests.get(f"{url}/healthz", timeout=1).ok,
            what=f"gatekeeper demo (log: {log_path})",
        )
        yield url
    finally:
        stop(process, signal.SIGINT)


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium, launched once for the session."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: run `make test`, which installs Debian's chromium",
            pytrace=False,
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "playwright is missing: run `make test`, which installs the test extras", pytrace=False
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, demo):
    """A page in a fresh browser context, so no test sees another's cookies."""
    context = browser.new_context(viewport=VIEWPORT, base_url=demo)
    context.set_default_timeout(10_000)
    yield context.new_page()
    context.close()


@pytest.fixture(scope="session")
def screenshot(tmp_path_factory):
    """Takes a full-page screenshot of each step.

    Into docs/screenshots/NAME.png, for the README, only when SCREENSHOTS=1 (`make
    screenshots`): the pages show the time of the check, so every run would rewrite them
    and `make test` must leave the work tree clean. Otherwise into a temporary folder.
    """
    folder = (
        SCREENSHOTS if os.environ.get("SCREENSHOTS") == "1" else tmp_path_factory.mktemp("shots")
    )
    folder.mkdir(parents=True, exist_ok=True)

    def take(page, name: str):
        page.screenshot(path=folder / f"{name}.png", full_page=True)

    return take


# --- accessibility: axe-core from npm, run in the page ----------------------------------

AXE_DIR = REPO / "node_modules" / "axe-core"
AXE = AXE_DIR / "axe.min.js"
# Every rule axe-core runs by default (WCAG 2.0-2.2 A and AA, and its best practices).
AXE_RUN = """async () => {
  const result = await axe.run(document, {resultTypes: ["violations"]});
  return result.violations.map(v => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.map(n => n.target.join(" ") + ": " + n.failureSummary),
  }));
}"""


@pytest.fixture(scope="session")
def axe_source():
    """axe-core's script, installed into node_modules/ (ignored by git) when missing.

    `make test` installs it first; this is for a bare `pytest`. No npm fails loudly.
    """
    if not AXE.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm is missing: run `make test`, which installs axe-core", pytrace=False)
        subprocess.run(
            [
                npm,
                "install",
                "--no-save",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(REPO),
                AXE_DIR.name,
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return AXE.read_text(encoding="utf-8")


def axe_violations(page, axe_source: str) -> list[dict]:
    """Every axe-core violation on the page as it is now.

    NOTE: the pages' CSP forbids inline scripts, so axe cannot come in a <script> tag;
    page.evaluate runs it through the DevTools protocol, which the CSP does not govern.
    """
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(axe_source)
    return page.evaluate(AXE_RUN)
