"""The emulator's shared state, kept on the Flask app for the blueprints to reach."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from app.emulator.faults import Faults
from app.emulator.id_tokens import IdTokens
from app.emulator.personas import Fixtures
from app.emulator.store import RecordStore
from app.emulator.tokens import TokenStore

EXTENSION = "orcid_emulator"


@dataclass(frozen=True, slots=True)
class Emulator:
    """What the emulator serves, what it has issued, its signing key, its fault knobs, and
    the records' qualifications as clients have changed them."""

    fixtures: Fixtures
    tokens: TokenStore
    faults: Faults
    id_tokens: IdTokens
    records: RecordStore


def emulator() -> Emulator:
    """The running emulator's state (inside a request)."""
    return current_app.extensions[EXTENSION]
