"""Health checks for operators and orchestrators."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from app import metrics

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """The process is up."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Ready to decide: a policy is loaded and Redis (when configured) takes writes.

    A broken policy edit does not make us unready: the last good policy keeps serving, so
    taking instances out of the load balancer would only turn researchers away. It is
    reported in ``policy``, in the ``gatekeeper_policy_ok`` gauge and in the log.

    :raise 503: with the reasons, when not ready.
    """
    gk = current_app.extensions["gatekeeper"]
    problems = []
    gk.policy_file.refresh()
    error = gk.policy_file.last_error
    unready = gk.store.unready()
    if unready is not None:
        problems.append(unready)
    body = {
        "status": "ready" if not problems else "not ready",
        "problems": problems,
        "policy_version": gk.checker.policy.version,
        "policy": {
            "ok": error is None,
            "problem": None
            if error is None
            else f"policy reload failed, still serving the previous one: {error.message}",
        },
    }
    return jsonify(body), (200 if not problems else 503)


@bp.get("/metrics")
def metrics_view():
    """Prometheus metrics; keep this path off the public proxy (docs/proxies do)."""
    body, content_type = metrics.render(current_app.extensions["gatekeeper"].settings.metrics_dir)
    return Response(body, content_type=content_type)
