"""Which client a request counts against for the per-client limits."""

import pytest

from app.web.clients import limited_address

LOOPBACK = ("127.0.0.1", "::1")
CHAIN = "203.0.113.9, 198.51.100.7"  # the proxy appended the last entry


@pytest.mark.parametrize(
    "peer, allowed, expected",
    [
        ("127.0.0.1", LOOPBACK, "198.51.100.7"),  # the proxy, on loopback
        ("::1", LOOPBACK, "198.51.100.7"),
        ("192.0.2.1", LOOPBACK, "192.0.2.1"),  # anyone else: its own address
        ("192.0.2.1", ("192.0.2.0/24",), "198.51.100.7"),
        ("192.0.2.1", ("*",), "198.51.100.7"),
        ("", LOOPBACK, "198.51.100.7"),  # a Unix socket's peer: only local processes
    ],
)
def test_only_a_forwarder_names_the_client(peer, allowed, expected):
    env = {"REMOTE_ADDR": peer, "HTTP_X_FORWARDED_FOR": CHAIN}
    assert limited_address(env, allowed) == expected


def test_without_x_forwarded_for_the_peer_counts():
    assert limited_address({"REMOTE_ADDR": "192.0.2.1"}, LOOPBACK) == "192.0.2.1"
    assert limited_address({}, LOOPBACK) == "unknown"


@pytest.mark.parametrize(
    "client, expected",
    [
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),  # the same host, another address
        ("::ffff:192.0.2.7", "::ffff:192.0.2.7"),  # an IPv4 client, mapped
        ("198.51.100.7", "198.51.100.7"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_an_ipv6_client_counts_as_its_64(client, expected):
    env = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": client}
    assert limited_address(env, LOOPBACK) == expected


def test_an_ignored_x_forwarded_for_is_logged_once_per_peer(caplog):
    env = {"REMOTE_ADDR": "192.0.2.200", "HTTP_X_FORWARDED_FOR": "198.51.100.7"}
    for _ in range(3):
        limited_address(env, LOOPBACK)
    warnings = [r for r in caplog.records if "FORWARDED_ALLOW_IPS" in r.getMessage()]
    assert len(warnings) == 1 and "192.0.2.200" in warnings[0].getMessage()
