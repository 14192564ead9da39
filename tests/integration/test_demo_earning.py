"""Earning the SAIL agreement in `gatekeeper demo`, with plain requests: the terms, ORCID's
consent, one item on the emulated record however often it is written, and the demo's own
file serving opening the dataset."""

from __future__ import annotations

import re
import signal
import subprocess
import time

import pytest
import requests

from tests.integration.conftest import BIN, REPO, free_port, sign_in, stop, wait_until

QUALIFIED = "0009-0000-0000-0017"  # the "qualified" persona: safe-researcher from UKDS
TERMS_PAGE = "/earn/sail-linked/sail-dua"
FILE = "/datasets/sail-linked/README.txt"
TITLE = "Accepted the SAIL data access agreement"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`gatekeeper demo` of its own: (its URL, the emulator's URL)."""
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
        wait_until(lambda: requests.get(f"{url}/healthz", timeout=1).ok, what=f"demo ({log_path})")
        yield url, f"http://127.0.0.1:{orcid_port}"
    finally:
        stop(process, signal.SIGINT)


def accept(browser: requests.Session, url: str) -> requests.Response:
    """Tick the box on the terms page and submit it: the response, not followed."""
    form = browser.get(url + TERMS_PAGE, timeout=10)
    assert form.status_code == 200, form.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)[1]
    version = re.search(r'name="version" value="([^"]+)"', form.text)[1]
    return browser.post(
        url + TERMS_PAGE,
        data={"csrf": csrf, "version": version, "accept": "yes"},
        allow_redirects=False,
        timeout=10,
    )


def consent(browser: requests.Session, url: str, asked: requests.Response, decision: str):
    """Answer ORCID's consent page as the qualified persona, and follow back to us."""
    assert asked.status_code == 302, asked.text
    authorize = asked.headers["Location"]
    assert "activities%2Fupdate" in authorize or "activities/update" in authorize
    answer = browser.get(
        authorize,
        params={"persona": "qualified", "decision": decision},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code in (302, 303), answer.text
    return browser.get(answer.headers["Location"], allow_redirects=False, timeout=15)


def our_items(orcid_url: str) -> list[dict]:
    """Our SAIL agreement items on the qualified persona's public record."""
    body = requests.get(
        f"{orcid_url}/v3.0/{QUALIFIED}/qualifications",
        headers={"Accept": "application/vnd.orcid+json"},
        timeout=5,
    ).json()
    return [
        summary["qualification-summary"]
        for group in body["affiliation-group"]
        for summary in group["summaries"]
        if summary["qualification-summary"]["role-title"] == TITLE
    ]


def opened(browser: requests.Session, file_url: str) -> requests.Response:
    """The file, asked for until it opens or a second and a half has passed.

    NOTE: the file was refused just before earning, and the check's per-worker memory
    trusts an answer for up to a second (RECHECK_AFTER in web/forward_auth.py) even
    though earning dropped the cached decision.
    """
    deadline = time.monotonic() + 1.5
    while True:
        response = browser.get(file_url, timeout=10)
        if response.status_code == 200 or time.monotonic() > deadline:
            return response
        time.sleep(0.05)


def test_earning_in_the_demo_writes_one_item_and_the_demo_serves_the_dataset(demo):
    url, orcid_url = demo
    browser, _ = sign_in(url, "qualified")
    assert browser.get(url + FILE, timeout=10).status_code == 403

    denied = consent(browser, url, accept(browser, url), "deny")
    assert denied.status_code == 200
    assert "Nothing was added to your ORCID record" in denied.text
    assert our_items(orcid_url) == []
    assert browser.get(f"{url}/datasets/sail-cohort/README.txt", timeout=10).status_code == 200

    done = consent(browser, url, accept(browser, url), "authorize")
    assert done.status_code == 302 and done.headers["Location"] == f"{TERMS_PAGE}/earned"
    earned = browser.get(url + done.headers["Location"], timeout=15).text
    assert "Added to your ORCID record" in earned and "Access granted" in earned
    (item,) = our_items(orcid_url)
    assert item["source"]["source-client-id"]["path"] == "APP-GATEKEEPERDEMO01"

    file = opened(browser, url + FILE)
    assert file.status_code == 200 and "SAIL linked records (demo)" in file.text
    assert file.headers["X-Auth-Request-Dataset"] == "sail-linked"
    listing = browser.get(f"{url}/datasets/sail-linked/", timeout=10)
    assert 'href="/datasets/sail-linked/linked-sample.csv"' in listing.text

    # Written again, with the permission kept: no second consent, and still one item.
    again = accept(browser, url)
    assert again.status_code == 302 and again.headers["Location"] == f"{TERMS_PAGE}/earned"
    renewed = browser.get(url + again.headers["Location"], timeout=15).text
    assert "Renewed on your ORCID record" in renewed
    # An update keeps the item's visibility; it is not "your default for new items".
    assert "It keeps the visibility it had on your record: <strong>public</strong>" in renewed
    assert "your default for new" not in renewed
    (renewed_item,) = our_items(orcid_url)
    assert renewed_item["put-code"] == item["put-code"]
    assert browser.get(url + FILE, timeout=10).status_code == 200
