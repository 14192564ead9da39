"""How many ORCID reads one decision costs on a record with thousands of look-alike items.

    .venv/bin/python bench/candidate_reads.py              # 12,000 items, about 15 s
    .venv/bin/python bench/candidate_reads.py --items 500

A loopback HTTP server plays ORCID: its summary lists ITEMS qualifications that all carry
the policy's title (a researcher can add as many as they like), and each item answers
at its own URL. The ORCID client reads the record twice: with the candidate cap in force
(the default, 50) and with the cap lifted to ITEMS, as before the cap existed. Every
request is counted by the server. Nothing leaves the machine; the run stops by itself.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.errors import OrcidError  # noqa: E402
from app.orcid_client import MAX_ITEMS, OrcidClient  # noqa: E402
from app.policy import load_policy  # noqa: E402

logging.disable(logging.WARNING)  # the uncapped read logs every read cut off at its deadline

RESEARCHER = "0000-0002-1825-0097"
TITLE = "Safe Researcher Training"


def item(put_code: int) -> dict:
    """A small but complete summary item (ORCID's members, most of them null)."""
    return {
        "put-code": put_code,
        "role-title": TITLE,
        "source": {
            "source-orcid": {"path": RESEARCHER},
            "source-client-id": None,
            "source-name": None,
        },
        "start-date": None,
        "end-date": None,
        "organization": None,
        "external-ids": None,
        "visibility": "public",
    }


def serve(count: int):
    summary = json.dumps(
        {
            "affiliation-group": [
                {"external-ids": None, "summaries": [{"qualification-summary": item(n)}]}
                for n in range(1, count + 1)
            ]
        }
    ).encode()
    requests_seen = {"summary": 0, "item": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            if self.path.endswith("/qualifications"):
                body, kind = summary, "summary"
            else:
                body, kind = json.dumps(item(int(self.path.rsplit("/", 1)[1]))).encode(), "item"
            with lock:
                requests_seen[kind] += 1
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.orcid+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.handle_error = lambda request, address: None  # the client hanging up at its deadline
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, requests_seen, len(summary)


def read_once(api_url: str, policy, max_items: int) -> tuple[str, float]:
    client = OrcidClient(api_url, check_record_status=False, max_items=max_items)
    dataset = policy.dataset("sail-cohort")
    started = time.monotonic()
    try:
        found = client.read_qualifications(RESEARCHER, lambda q: policy.is_candidate(dataset, q))
        outcome = f"read {len(found)} items"
    except OrcidError as exc:
        outcome = f"refused: {exc.reason}"
    finally:
        client.close()
    return outcome, time.monotonic() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=12_000)
    args = parser.parse_args()
    policy = load_policy(REPO / "policies")
    server, seen, size = serve(args.items)
    api_url = f"http://127.0.0.1:{server.server_address[1]}/v3.0"
    print(f"record: {args.items} candidate items, summary {size / 1e6:.1f} MB")
    for label, cap in (("capped", MAX_ITEMS), ("uncapped (as before)", args.items)):
        seen.update(summary=0, item=0)
        outcome, seconds = read_once(api_url, policy, cap)
        time.sleep(0.5)  # let reads still in flight land in the count
        print(
            f"{label:22} max_items={cap:<6} {outcome:36} "
            f"{seen['summary']} summary + {seen['item']} item reads in {seconds:.2f} s"
        )
    server.shutdown()


if __name__ == "__main__":
    main()
