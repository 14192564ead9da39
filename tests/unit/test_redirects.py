"""safe_next() sends signed-in users only to our own paths and allowed hosts."""

import codecs
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.web.redirects import MAX_LENGTH, safe_next

HOSTS = frozenset({"data.example.org", "gatekeeper.example.org"})
HOSTILE = Path(__file__).parent.parent / "data" / "hostile_redirects.txt"
DEFAULT = "/fallback"


def read_hostile_targets() -> list[str]:
    """Read the data file's targets, decoding escapes on lines marked ``esc:``."""
    targets = []
    for line in HOSTILE.read_text(encoding="utf-8").split("\n"):
        if not line or line.startswith("#"):
            continue
        if line.startswith("esc:"):
            line = codecs.decode(line.removeprefix("esc:"), "unicode_escape")
        targets.append(line)
    return targets


class TestSafeNext:
    def test_every_hostile_target_in_the_data_file_falls_back_to_default(self):
        targets = read_hostile_targets()
        assert len(targets) == len(set(targets)) >= 150
        accepted = [t for t in targets if safe_next(t, HOSTS, default=DEFAULT) != DEFAULT]
        assert accepted == []

    @pytest.mark.parametrize(
        "target, allowed",
        [
            ("/", HOSTS),
            ("/datasets/x/file.csv?x=1#y", HOSTS),
            ("/datasets/x/", HOSTS),
            ("/datasets/my%20file.csv", HOSTS),
            ("/search?q=a%2Fb&next=//elsewhere", HOSTS),
            ("https://data.example.org/datasets/x", HOSTS),
            ("https://data.example.org", HOSTS),
            ("http://gatekeeper.example.org:8443/", {"gatekeeper.example.org:8443"}),
            ("https://data.example.org:443/x", ("data.example.org:443",)),
            ("https://DATA.Example.ORG/datasets/x", HOSTS),
            ("https://data.example.org/datasets/x", ("DATA.EXAMPLE.ORG",)),
            ("https://data.example.org/x", ("https://data.example.org",)),
            ("https://data.example.org:443/x", ("https://data.example.org",)),
            ("http://localhost:8000/x", ("http://localhost:8000",)),
            ("https://data.example.org?x=1", HOSTS),
            ("https://data.example.org#top", HOSTS),
        ],
        ids=[
            "root",
            "path-query-fragment",
            "trailing-slash",
            "encoded-space",
            "slashes-in-query",
            "allowed-host",
            "allowed-host-no-path",
            "allowed-host-and-port",
            "default-port-written-out",
            "upper-case-host",
            "upper-case-allowed-entry",
            "origin-entry",
            "origin-entry-default-port-written-out",
            "origin-entry-with-port",
            "no-path-a-query",
            "no-path-a-fragment",
        ],
    )
    def test_safe_target_is_returned_unchanged(self, target, allowed):
        assert safe_next(target, allowed, default=DEFAULT) == target

    @pytest.mark.parametrize(
        "target, allowed",
        [
            ("http://gatekeeper.example.org:9000/", {"gatekeeper.example.org:8443"}),
            ("http://gatekeeper.example.org/", {"gatekeeper.example.org:8443"}),
            ("http://data.example.org/", {"data.example.org:443"}),
            ("https://evil.com/", {"user@evil.com", "evil.com/", "[evil.com]"}),
            # PUBLIC_URL is allowed as an origin: its scheme and port, no other.
            ("http://data.example.org/x", ("https://data.example.org",)),
            ("https://data.example.org:6379/", ("https://data.example.org",)),
            ("http://data.example.org:443/", ("https://data.example.org",)),
            ("https://localhost/x", ("http://localhost:8000",)),
            # The host is ours, but the path is what a local target may not be.
            ("https://data.example.org//evil.com", HOSTS),
            ("https://data.example.org/%2F%2Fevil.com", HOSTS),
            ("https://data.example.org/..//evil.com", HOSTS),
            ("https://data.example.org/./x", HOSTS),
        ],
        ids=[
            "other-port",
            "implied-port-80",
            "http-is-port-80",
            "malformed-entries",
            "origin-other-scheme",
            "origin-other-port",
            "origin-other-scheme-same-port",
            "origin-with-port-other-scheme",
            "empty-segment",
            "encoded-empty-segment",
            "dot-dot-then-empty-segment",
            "dot-segment",
        ],
    )
    def test_url_is_refused_when_no_entry_names_its_host_and_port(self, target, allowed):
        assert safe_next(target, allowed, default=DEFAULT) == DEFAULT

    @pytest.mark.parametrize(
        "target",
        [
            "https://data.example.org/",
            "http://gatekeeper.example.org/",
            "https://data.example.org:8443/datasets/x",
        ],
        ids=["https", "http", "with-port"],
    )
    def test_empty_allowed_hosts_refuses_every_absolute_url(self, target):
        assert safe_next(target, default=DEFAULT) == DEFAULT
        assert safe_next(target, frozenset(), default=DEFAULT) == DEFAULT

    @pytest.mark.parametrize(
        "target",
        [None, b"/datasets/x", 42, ["/"], "/" + "a" * MAX_LENGTH],
        ids=["none", "bytes", "int", "list", "too-long"],
    )
    def test_non_text_or_overlong_input_falls_back_to_default(self, target):
        assert safe_next(target, HOSTS, default=DEFAULT) == DEFAULT

    def test_path_of_exactly_max_length_is_accepted(self):
        target = "/" + "a" * (MAX_LENGTH - 1)
        assert safe_next(target, HOSTS, default=DEFAULT) == target

    @given(
        st.one_of(
            st.text(),
            st.builds(
                str.__add__,
                st.sampled_from(
                    [
                        "/",
                        "//",
                        "/%2F",
                        "http://",
                        "https://",
                        "HTTPS://",
                        "http:",
                        "https://data.example.org",
                        "https://gatekeeper.example.org:",
                        "https://data.example.org@",
                        "javascript:",
                        "\\",
                    ]
                ),
                st.text(),
            ),
        )
    )
    def test_any_text_yields_default_or_a_url_that_stays_on_allowed_hosts(self, target):
        result = safe_next(target, HOSTS, default=DEFAULT)
        if result == DEFAULT:
            return
        parts = urlsplit(result)
        # An allowed entry without a port allows any port, so the host alone is enough.
        assert parts.netloc == "" or parts.hostname in HOSTS
        assert result.lower().startswith(("/", "http://", "https://"))
        assert not result.startswith("//")
