"""Shared fixtures: policies written to disk, qualifications built in ORCID's shape."""

from __future__ import annotations

import datetime as dt
import signal
import textwrap

import pytest
from hypothesis import HealthCheck, settings

from app.policy import load_policy
from app.qualifications import parse_qualification
from tests import orcid_json

# A suite started as a background job (`make test &`, nohup) inherits SIGINT ignored, and
# so would every server it starts: the demo would then sit through the Ctrl-C its test
# sends. A handler, unlike an ignored signal, is reset to the default in a child.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Hypothesis fails an example that takes over 200 ms, and a test whose examples are slow to
# generate, by default: timing assertions, which a loaded 2-core machine can trip on any
# test, however small (test_access_tokens' checksum property failed twice beside other
# work on the machine, never alone).
settings.register_profile("gatekeeper", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("gatekeeper")

RESEARCHER = "0000-0002-1825-0097"
UKDS = "APP-UKDS000000000001"
NIHR = "APP-NIHR000000000001"
PORTAL = "APP-NIHRPORTAL000001"
OWN_CLIENT = "APP-GATEKEEPER000001"
ROR = "https://ror.org/05x6aa123"

POLICY = """
version: 1
sources:
  ukds:
    name: UK Data Service
    client_ids: [APP-UKDS000000000001]
  nihr:
    name: NIHR Learn
    client_ids: [APP-NIHR000000000001, APP-NIHRPORTAL000001]
qualifications:
  safe-researcher:
    title: Safe Researcher Training
    organization: https://ror.org/05x6aa123
    sources: [ukds, self-issued]
  gcp:
    title_pattern: '^Good Clinical Practice'
    sources: [nihr]
  hsr:
    external_id: {type: uri, value: https://example.org/quals/hsr}
    sources: [nihr, self-asserted]
  recent:
    title: Data Protection Essentials
    sources: [self-asserted]
    max_age_days: 365
  certified:
    title: Certified Course
    url_prefix: https://example.org/certs/
    external_id: {type: other-id, value: CERT-1}
    sources: [self-asserted]
datasets:
  sail:
    title: SAIL cohort extract
    paths: [/datasets/sail/]
    require: [safe-researcher, {any_of: [gcp, hsr]}]
    cache_ttl: 900
  open:
    paths: [/datasets/open/, /datasets/open/extra/]
    require: [recent]
  certs:
    paths: [/certs/]
    require: [certified]
"""


@pytest.fixture
def write_policy(tmp_path):
    """Write YAML text (dedented) to a file and return its path."""

    def write(text: str, name: str = "policy.yaml"):
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    return write


@pytest.fixture
def policy(write_policy):
    return load_policy(write_policy(POLICY))


@pytest.fixture
def make_qualification():
    """Build a Qualification by parsing ORCID-shaped JSON, as the reader would."""

    def make(put_code: int = 1, **kwargs):
        kwargs.setdefault("owner", RESEARCHER)
        return parse_qualification(orcid_json.qualification(put_code, **kwargs))

    return make


def qualified_items() -> list[dict]:
    """ORCID items that meet the test policy's `sail` dataset: trusted and valid."""
    return [
        orcid_json.qualification(
            1,
            owner=RESEARCHER,
            title="Safe Researcher Training",
            src=orcid_json.source(client_id=UKDS),
        ),
        orcid_json.qualification(
            2,
            owner=RESEARCHER,
            title="Good Clinical Practice",
            src=orcid_json.source(client_id=NIHR),
        ),
    ]


def at(day: str) -> dt.datetime:
    """Noon UTC on a day: the 'now' a decision is made at."""
    return dt.datetime.fromisoformat(day + "T12:00:00+00:00")
