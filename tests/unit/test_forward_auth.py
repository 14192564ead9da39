"""Which dataset a proxy's check is about, from what the proxy tells us."""

import pytest

from app.web.forward_auth import ProxyRequest


def environ(path="/auth", query="", raw=None, **headers):
    env = {"PATH_INFO": path, "QUERY_STRING": query}
    if raw is not None:
        env["RAW_URI"] = raw
    env.update({"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()})
    return env


def dataset_of(policy, env):
    found = ProxyRequest(env, env["PATH_INFO"]).dataset(policy)
    return found.key if found else None


class TestProxyRequest:
    @pytest.mark.parametrize(
        "env, expected",
        [
            (environ(query="dataset=sail"), "sail"),
            (environ(query="dataset=nope"), None),
            (environ(X_Original_URI="/datasets/sail/a.csv"), "sail"),
            (environ(X_Forwarded_Uri="/datasets/open/a.csv"), "open"),
            (environ("/auth/datasets/sail/a.csv", raw="/auth/datasets/sail/a.csv"), "sail"),
            (environ(), None),
        ],
        ids=["query", "unknown-query", "nginx", "traefik", "envoy", "nothing"],
    )
    def test_the_dataset_comes_from_the_query_or_the_original_url(self, policy, env, expected):
        assert dataset_of(policy, env) == expected

    def test_envoy_never_reads_the_browsers_query(self, policy):
        env = environ(
            "/auth/datasets/sail/a.csv",
            query="dataset=open&redirect=1",
            raw="/auth/datasets/sail/a.csv?dataset=open&redirect=1",
        )
        request = ProxyRequest(env, env["PATH_INFO"])
        assert request.dataset(policy).key == "sail"
        assert request.wants_redirect is False

    def test_envoy_asks_for_a_redirect_with_a_header(self, policy):
        env = environ("/auth/datasets/sail/a", raw="/auth/datasets/sail/a", X_Auth_Redirect="1")
        assert ProxyRequest(env, env["PATH_INFO"]).wants_redirect is True

    @pytest.mark.parametrize(
        "headers",
        [
            {"X_Original_URI": "/datasets/open/a", "X_Forwarded_Uri": "/datasets/sail/a"},
            {"X_Original_URI": "/datasets/sail/a", "X_Forwarded_Uri": "/elsewhere"},
        ],
        ids=["two-datasets", "dataset-and-none"],
    )
    def test_sources_that_disagree_fail_closed(self, policy, headers):
        assert dataset_of(policy, environ(**headers)) is None

    def test_sources_that_agree_are_fine(self, policy):
        env = environ(X_Original_URI="/datasets/sail/a", X_Forwarded_Uri="/datasets/sail/b")
        assert dataset_of(policy, env) == "sail"

    def test_envoy_path_is_read_from_the_raw_request_line(self, policy):
        # The browser asked for /datasets/open/%2520/x: a folder literally named "%20"
        # under open. PATH_INFO holds it decoded once (/datasets/open/%20/x); the raw
        # request line keeps what the file server will decode.
        env = environ("/auth/datasets/open/%20/x", raw="/auth/datasets/open/%2520/x")
        assert dataset_of(policy, env) is None  # %25: a double-decoding server reads " "
        env = environ("/auth/datasets/open/two words", raw="/auth/datasets/open/two%20words")
        assert dataset_of(policy, env) == "open"

    @pytest.mark.parametrize(
        "raw",
        [
            "/auth/datasets/open/%252e%252e/sail/x",
            "/auth/datasets/open/..;/sail/x",
            "/auth//datasets/sail/x",
            "/auth/datasets/open/..%2fsail/x",
        ],
        ids=["double-encoded-dots", "path-parameter", "leading-double-slash", "encoded-slash"],
    )
    def test_envoy_paths_servers_read_differently_fail_closed(self, policy, raw):
        env = environ(raw, raw=raw)  # PATH_INFO is not read when the raw line is there
        assert dataset_of(policy, env) is None

    def test_a_url_in_the_query_does_not_make_the_path_a_url(self, policy):
        # "//datasets/sail/x" read as a URL is host "datasets", path "/sail/x".
        env = environ(X_Original_URI="//datasets/sail/x?next=https://example.org/")
        assert dataset_of(policy, env) is None
        env = environ(X_Original_URI="/datasets/sail/x?next=https://example.org/datasets/open/")
        assert dataset_of(policy, env) == "sail"

    def test_original_url_keeps_encoding_and_query_for_next(self):
        env = environ(
            "/auth/datasets/sail/two words.txt",
            query="part=1&of=2",
            raw="/auth/datasets/sail/two%20words.txt?part=1&of=2",
        )
        assert ProxyRequest(env, env["PATH_INFO"]).original_url() == (
            "/datasets/sail/two%20words.txt?part=1&of=2"
        )

    def test_original_url_is_absolute_with_forwarded_host(self):
        env = environ(
            X_Forwarded_Uri="/datasets/sail/a",
            X_Forwarded_Host="data.example.org",
            X_Forwarded_Proto="https",
        )
        assert (
            ProxyRequest(env, "/auth").original_url() == "https://data.example.org/datasets/sail/a"
        )
