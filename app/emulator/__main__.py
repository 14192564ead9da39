"""``python -m app.emulator [--host H] [--port P] [--fixtures FILE] [--redirect-uri URI]...``:
serve the emulator."""

import argparse

from app.emulator.server import run

parser = argparse.ArgumentParser(
    prog="python -m app.emulator", description="Serve the ORCID emulator on loopback."
)
parser.add_argument("--host", default="127.0.0.1", help="a loopback address")
parser.add_argument("--port", type=int, default=8001)
parser.add_argument("--fixtures", help="a personas YAML file (default: the shipped one)")
parser.add_argument(
    "--redirect-uri",
    action="append",
    default=[],
    dest="redirect_uris",
    metavar="URI",
    help="also accept this redirect URI for every client (repeatable)",
)
args = parser.parse_args()
try:
    run(args.host, args.port, args.fixtures, args.redirect_uris)
except ValueError as exc:  # a non-loopback host, or a FixtureError
    parser.error(str(exc))
