"""An ORCID emulator: a separate Flask app that plays ORCID for sign-in, record reads and
qualification writes.

It serves ``/oauth/authorize``, ``/oauth/token`` and ``/oauth/revoke`` (oauth.py),
OpenID Connect discovery, ``/oauth/jwks`` and ``/oauth/userinfo`` (oidc.py), the v3.0
record API with POST, PUT and DELETE of qualifications (records.py, writes.py) and a
control API for tests under ``/_emulator/`` (control.py),
from the clients and personas in a YAML fixture file (personas.py). It imports nothing
from the rest of ``app`` and writes ORCID's JSON itself (record_json.py), so a bug in our
parser is never mirrored here.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, request

from app.emulator import control, oauth, oidc, records
from app.emulator.faults import Faults
from app.emulator.id_tokens import IdTokens
from app.emulator.personas import (
    FixtureError,
    load_fixtures,
    parse_clients,
    redirect_uri_problem,
)
from app.emulator.state import EXTENSION, Emulator
from app.emulator.store import RecordStore
from app.emulator.tokens import TokenStore

# Which requests count, and can be faulted, as which kind (see faults.KINDS); the record
# API's views count alike under each of its three base paths.
ENDPOINT_KINDS = {
    "oauth.authorize": "authorize",
    "oauth.token": "token",
    "oauth.revoke": "revoke",
    "oidc.discovery": "discovery",
    "oidc.jwks": "jwks",
    "oidc.userinfo": "userinfo",
    **{
        f"{api}.{view}": view
        for api in records.APIS
        for view in (
            "qualifications",
            "qualification",
            "person",
            "qualification_create",
            "qualification_update",
            "qualification_delete",
        )
    },
}


def create_app(
    fixtures_path: str | Path | None = None,
    *,
    clients: list[dict] | None = None,
    signing_key: rsa.RSAPrivateKey | None = None,
    redirect_uris: tuple[str, ...] | list[str] = (),
):
    """Build the emulator app from a fixture file (the shipped personas by default).

    ``clients`` replaces the file's registered clients; its entries take the file's format.
    ``signing_key`` is the RSA key ID tokens are signed with; each app makes its own
    2048-bit key when none is given. ``redirect_uris`` are accepted for every client,
    besides its registered ones (``--redirect-uri``).

    :raises FixtureError: when the fixture file, ``clients`` or ``redirect_uris`` has problems.
    """
    fixtures = load_fixtures(fixtures_path)
    problems: list[str] = []
    if clients is not None:
        fixtures = replace(fixtures, clients=parse_clients(clients, problems))
    problems += [
        f"--redirect-uri: {problem}"
        for problem in map(redirect_uri_problem, redirect_uris)
        if problem is not None
    ]
    if problems:
        raise FixtureError(problems)
    if redirect_uris:
        extra = tuple(dict.fromkeys(redirect_uris))
        fixtures = replace(
            fixtures,
            clients={
                client_id: replace(client, extra_redirect_uris=extra)
                for client_id, client in fixtures.clients.items()
            },
        )

    app = Flask(__name__)
    state = Emulator(
        fixtures=fixtures,
        tokens=TokenStore(),
        faults=Faults(),
        id_tokens=IdTokens(signing_key),
        records=RecordStore(fixtures),
    )
    app.extensions[EXTENSION] = state
    app.register_blueprint(oauth.bp)
    app.register_blueprint(oidc.bp)
    for api, prefix in records.APIS.items():
        app.register_blueprint(records.bp, url_prefix=prefix, name=api)
    app.register_blueprint(control.bp)

    @app.before_request
    def count_and_inject_faults():
        kind = ENDPOINT_KINDS.get(request.endpoint)
        return None if kind is None else state.faults.on_request(kind)

    return app
