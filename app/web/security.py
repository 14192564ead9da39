"""Security headers on every response the Flask app makes (the /auth fast path has its own).

Pages carry no inline script, style or event handler, so the Content-Security-Policy can
allow our own static files and nothing else.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import request


def init_app(app) -> None:
    """Add the headers to every response, error pages and redirects included."""
    headers = security_headers(app.extensions["gatekeeper"].settings.orcid_base_url)

    @app.after_request
    def _security_headers(response):
        for name, value in headers.items():
            response.headers.setdefault(name, value)
        # Every page shows who is signed in (the layout's header), and sign-in, callback
        # and sign-out set cookies, so only static files may be kept by a cache.
        static = request.endpoint == "static" and response.status_code in (200, 304)
        if not static:
            response.headers.setdefault("Cache-Control", "private, no-store")
        return response


def security_headers(orcid_base_url: str) -> dict[str, str]:
    """The headers every response carries, with ORCID's origin where a form may lead."""
    # NOTE: form-action also governs the redirects that follow a form's POST (CSP3, as
    # Chromium enforces it): "Check again" after the session lapsed goes /check -> /login
    # -> ORCID's authorize page, so ORCID's origin must be allowed, or the browser stops.
    # When ORCID approves at once it redirects on to /callback and the dataset page:
    # 'self' again, since /check's next is always one of our pages.
    form_action = " ".join(["'self'", *filter(None, [_origin(orcid_base_url)])])
    policy = [
        "default-src 'none'",
        "style-src 'self'",
        "img-src 'self'",
        f"form-action {form_action}",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
    return {
        "Content-Security-Policy": "; ".join(policy),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",  # frame-ancestors, for browsers without CSP level 2
        # The callback's URL carries ORCID's code and our state: no-referrer keeps them out
        # of the Referer of anything that page loads or links to, our own access logs
        # included (nginx's combined format logs $http_referer). Nothing here reads Referer.
        "Referrer-Policy": "no-referrer",
    }


def _origin(url: str) -> str | None:
    """``scheme://host[:port]`` of a URL, as a CSP source expression; None if it has none."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a port out of range: no ORCID to allow
        return None
    if not parts.scheme or not parts.hostname:
        return None
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    return f"{parts.scheme.lower()}://{host}{port}"
