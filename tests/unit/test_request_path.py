"""Request paths reduced to the one meaning every server agrees on, or refused."""

import pytest

from app.request_path import normalize_path, path_has_prefix, path_of
from tests.hostile_paths import read_hostile_paths


class TestPathOf:
    @pytest.mark.parametrize(
        "original, expected",
        [
            ("/datasets/a/x", "/datasets/a/x"),
            ("/datasets/a/x?q=1", "/datasets/a/x"),
            ("https://data.example/datasets/a/x?q=1", "/datasets/a/x"),
            ("HTTP://data.example:8080/datasets/a/", "/datasets/a/"),
            ("svn+ssh://host/x", "/x"),
            ("https://data.example", ""),
            ("https://data.example?next=/datasets/a/", ""),
            # Not a scheme: a path whose query holds a URL.
            ("//datasets/a/x?next=https://example.org/", "//datasets/a/x"),
            ("/datasets/a/x?next=https://example.org/b/", "/datasets/a/x"),
            ("1http://host/x", "1http://host/x"),
            ("datasets/a/x", "datasets/a/x"),
        ],
    )
    def test_only_a_leading_scheme_makes_a_full_url(self, original, expected):
        assert path_of(original) == expected


class TestNormalizePath:
    @pytest.mark.parametrize(
        "raw, expected",
        [
            ("/", "/"),
            ("/datasets/a/x.csv", "/datasets/a/x.csv"),
            ("/datasets/a/", "/datasets/a/"),
            ("/datasets/a/./x", "/datasets/a/x"),
            ("/datasets/b/../a/x", "/datasets/a/x"),
            ("/datasets/a/x/..", "/datasets/a/"),
            ("/datasets/a/.", "/datasets/a/"),
            ("/datasets/a/two%20words.txt", "/datasets/a/two words.txt"),
            ("/datasets/a/%7Euser/%41", "/datasets/a/~user/A"),
            ("/datasets/a/.hidden", "/datasets/a/.hidden"),
            ("/datasets/a/x.tar.gz?part=1&next=https://example.org/", "/datasets/a/x.tar.gz"),
            ("https://data.example/datasets/b/../a/x", "/datasets/a/x"),
            ("/datasets/a/x?q#frag", "/datasets/a/x"),
        ],
    )
    def test_clean_paths_are_decoded_once_and_resolved(self, raw, expected):
        assert normalize_path(raw) == expected

    @pytest.mark.parametrize(
        "raw",
        [
            "",
            "datasets/a/x",
            "https://data.example",
            "//datasets/a/x",
            "//datasets/a/x?next=https://example.org/",
            "/datasets//a/x",
            "/datasets/a/x//../../b/y",
            "/datasets/a/..;/b/x",
            "/datasets/a/x;jsessionid=1",
            "/datasets/a/..%3B/b/x",
            "/datasets/a/..%3b/b/x",
            "/datasets/a/%252e%252e/b/x",
            "/datasets/a/%%32%65%%32%65/b/x",
            "/datasets/a/%2",
            "/datasets/a/%zz",
            "/datasets/a/..%2Fb/x",
            "/datasets/a/..%2fb/x",
            "/datasets/a/..\\b\\x",
            "/datasets/a/..%5Cb/x",
            "/datasets/a/%2e%2e/b/x",
            "/datasets/a/.%2E/b/x",
            "/datasets/a/%2e/x",
            "/datasets/a/.../x",
            "/datasets/a/..%20/b/x",
            "/datasets/a/x%00.csv",
            "/datasets/a/x\x00.csv",
            "/datasets/a/x%0a",
            "/datasets/a/x\tb",
            "/datasets/a/x%7f",
            "/datasets/a/%c3%a9",
            "/datasets/a/\u00e9",
            "/datasets/a/%c0%ae%c0%ae/b/x",
            "/datasets/a/%ef%bc%8f..%ef%bc%8fb/x",
            "/datasets/a/x#/../../b/y",
            "/..",
            "/datasets/../../etc/passwd",
        ],
    )
    def test_paths_servers_read_differently_are_refused(self, raw):
        assert normalize_path(raw) is None

    @pytest.mark.parametrize(
        "case", read_hostile_paths(), ids=lambda case: f"line-{case.line}:{case.path[:50]!r}"
    )
    def test_each_hostile_path_is_refused_unless_marked_judged(self, case):
        # The list the proxy tests send; each line says whether the check may judge it.
        assert (normalize_path(case.path) is not None) is case.judged

    @pytest.mark.parametrize(
        "prefix", ["/", "/datasets/a/", "/datasets/two words/", "/datasets/a.b-c_d/"]
    )
    def test_a_clean_prefix_normalises_to_itself(self, prefix):
        # The policy checker accepts a dataset's `paths` entry only if this holds.
        assert normalize_path(prefix) == prefix

    @pytest.mark.parametrize("prefix", ["/datasets/a;b/", "//datasets/", "/datasets/%2e%2e/"])
    def test_a_hostile_prefix_does_not(self, prefix):
        assert normalize_path(prefix) != prefix


class TestPathHasPrefix:
    @pytest.mark.parametrize(
        "path, prefix, expected",
        [
            ("/datasets/a/x", "/datasets/a/", True),
            ("/datasets/a", "/datasets/a/", True),
            ("/datasets/ab/x", "/datasets/a/", False),
            ("/datasets/ab", "/datasets/a", False),
            ("/datasets/a/x", "/datasets/a", True),
            ("/anything", "/", True),
        ],
    )
    def test_a_prefix_ends_at_a_segment_boundary(self, path, prefix, expected):
        assert path_has_prefix(path, prefix) is expected
