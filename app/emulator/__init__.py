"""An ORCID emulator: a separate Flask app that plays ORCID for sign-in and record reads.

It serves ``/oauth/authorize``, ``/oauth/token`` and ``/oauth/revoke`` (oauth.py),
OpenID Connect discovery, ``/oauth/jwks`` and ``/oauth/userinfo`` (oidc.py), the v3.0
record API (records.py) and a control API for tests under ``/_emulator/`` (control.py),
from the clients and personas in a YAML fixture file (personas.py). It imports nothing
from the rest of ``app`` and writes ORCID's JSON itself (record_json.py), so a bug in our
parser is never mirrored here.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, request

from app.emulator import control, oauth, oidc, records
from app.emulator.faults import Faults
from app.emulator.id_tokens import IdTokens
from app.emulator.personas import FixtureError, Fixtures, load_fixtures, parse_clients
from app.emulator.state import EXTENSION, Emulator
from app.emulator.tokens import TokenStore

# Which requests count, and can be faulted, as which kind (see faults.KINDS).
ENDPOINT_KINDS = {
    "oauth.authorize": "authorize",
    "oauth.token": "token",
    "oauth.revoke": "revoke",
    "oidc.discovery": "discovery",
    "oidc.jwks": "jwks",
    "oidc.userinfo": "userinfo",
    "records.qualifications": "qualifications",
    "records.qualification": "qualification",
    "records.person": "person",
}


def create_app(
    fixtures_path: str | Path | None = None,
    *,
    clients: list[dict] | None = None,
    signing_key: rsa.RSAPrivateKey | None = None,
):
    """Build the emulator app from a fixture file (the shipped personas by default).

    ``clients`` replaces the file's registered clients; its entries take the file's format.
    ``signing_key`` is the RSA key ID tokens are signed with; each app makes its own
    2048-bit key when none is given.

    :raises FixtureError: when the fixture file or ``clients`` has problems.
    """
    fixtures = load_fixtures(fixtures_path)
    if clients is not None:
        problems: list[str] = []
        fixtures = Fixtures(clients=parse_clients(clients, problems), personas=fixtures.personas)
        if problems:
            raise FixtureError(problems)

    app = Flask(__name__)
    state = Emulator(
        fixtures=fixtures,
        tokens=TokenStore(),
        faults=Faults(),
        id_tokens=IdTokens(signing_key),
    )
    app.extensions[EXTENSION] = state
    app.register_blueprint(oauth.bp)
    app.register_blueprint(oidc.bp)
    app.register_blueprint(records.bp)
    app.register_blueprint(control.bp)

    @app.before_request
    def count_and_inject_faults():
        kind = ENDPOINT_KINDS.get(request.endpoint)
        return None if kind is None else state.faults.on_request(kind)

    return app
