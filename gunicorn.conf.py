"""Gunicorn settings: the packaged configuration, app/gunicorn_config.py, as the wheel has it.

gunicorn -c gunicorn.conf.py 'app:create_app()'   (or: gatekeeper serve)
"""

from app.gunicorn_config import *  # noqa: F403 (gunicorn reads this module's names)
