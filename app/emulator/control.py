"""The emulator's control API for tests and demos, under /_emulator/ (JSON in and out).

- ``GET  /_emulator/requests``: requests counted per endpoint kind since the last reset.
- ``GET  /_emulator/faults``: the fault settings in force.
- ``POST /_emulator/faults``: replace them, e.g. ``{"latency_ms": 50, "status": 503,
  "rate": 1.0, "retry_after": 1, "endpoints": ["qualifications"]}``; omitted keys take
  their defaults (no latency, no error, rate 1, every endpoint).
- ``POST /_emulator/reset``: zero the counters, switch faults off, set the ID-token
  tamper mode back to ``none`` and put every record's qualifications back as the fixtures
  have them, forgetting what clients wrote (tokens survive).
- ``GET  /_emulator/personas``: each persona's key, iD, name and status.
- ``POST /_emulator/revoke``: ``{"orcid": ...}`` or ``{"access_token": ...}`` revokes
  tokens, as a researcher does under Trusted Organizations; answers ``{"revoked": n}``.
- ``GET  /_emulator/oidc``: the ID-token tamper mode in force, ``{"tamper": "none"}``.
- ``POST /_emulator/oidc``: ``{"tamper": mode}`` makes every ID token issued from now on
  (until reset, or ``"none"``) wrong in one way, for testing a verifier:
  ``signature`` signs with a key that is not in the JWKS (the ``kid`` stays right);
  ``issuer`` sets another ``iss``; ``audience`` another ``aud``; ``nonce`` a nonce other
  than the one sent; ``expired`` makes ``exp`` an hour past (and ``iat`` 25 hours past);
  ``at_hash`` an ``at_hash`` that is another token's.
  ``none`` issues correct tokens again. Any other mode answers 400.

Request kinds counted (and faultable, see faults.py): authorize, token, qualifications,
qualification, person, discovery, jwks, userinfo, revoke, qualification_create (POST),
qualification_update (PUT), qualification_delete (DELETE).
"""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from app.emulator.faults import FaultSettings
from app.emulator.id_tokens import TAMPERS
from app.emulator.state import emulator

bp = Blueprint("control", __name__, url_prefix="/_emulator")


@bp.get("/requests")
def requests_counted():
    return jsonify(emulator().faults.counts())


@bp.get("/faults")
def faults():
    return jsonify(emulator().faults.settings.to_json())


@bp.post("/faults")
def set_faults():
    try:
        settings = FaultSettings.from_json(request.get_json(silent=True))
    except (TypeError, ValueError) as exc:
        return jsonify(error=str(exc)), 400
    emulator().faults.configure(settings)
    return jsonify(settings.to_json())


@bp.post("/reset")
def reset():
    knobs = emulator().faults
    knobs.reset()
    emulator().id_tokens.reset()
    emulator().records.reset()
    return jsonify(
        requests=knobs.counts(),
        faults=knobs.settings.to_json(),
        oidc={"tamper": emulator().id_tokens.tamper},
    )


@bp.get("/oidc")
def oidc():
    return jsonify(tamper=emulator().id_tokens.tamper)


@bp.post("/oidc")
def set_oidc():
    data = request.get_json(silent=True)
    if not isinstance(data, dict) or set(data) != {"tamper"}:
        return jsonify(error=f"give only 'tamper', one of {', '.join(TAMPERS)}"), 400
    try:
        emulator().id_tokens.set_tamper(data["tamper"])
    except ValueError as exc:
        return jsonify(error=str(exc)), 400
    return jsonify(tamper=emulator().id_tokens.tamper)


@bp.get("/personas")
def personas():
    return jsonify(
        [
            {"key": p.key, "orcid": p.orcid, "name": p.name.display, "status": p.status}
            for p in emulator().fixtures.personas
        ]
    )


@bp.post("/revoke")
def revoke():
    data = request.get_json(silent=True)
    if not isinstance(data, dict) or not (data.keys() & {"orcid", "access_token"}):
        return jsonify(error="give 'orcid' or 'access_token'"), 400
    count = emulator().tokens.revoke(orcid=data.get("orcid"), token=data.get("access_token"))
    return jsonify(revoked=count)
