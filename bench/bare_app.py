"""The benchmark's baseline: a bare Flask app whose one route answers 200.

Served by gunicorn with the repository's gunicorn.conf.py, exactly as the gatekeeper is:

    gunicorn -c gunicorn.conf.py 'bench.bare_app:create_app()'

It answers ``GET /auth`` with the same status line, body and headers as a cached allow
(less the three identity headers), so the two differ only in the work behind the answer.
"""

from flask import Flask


def create_app():
    """A Flask app with one route, ``GET /auth``, that always answers 200."""
    app = Flask(__name__)

    @app.get("/auth")
    def auth():
        return (
            "200 OK",
            200,
            {"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store"},
        )

    return app
