"""The pure core never loads a web framework, Redis or an HTTP client."""

import subprocess
import sys

CORE = [
    "app.errors",
    "app.orcid_id",
    "app.fuzzy_date",
    "app.qualifications",
    "app.policy",
    "app.decision",
    "app.explain",
    "app.settings",
    "app.saved_record",
    "app.cli",
]


def test_core_modules_import_no_flask_redis_or_requests():
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in CORE)
        + "print(sorted(m for m in ('flask', 'redis', 'requests', 'authlib') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
