"""Which client a request counts against, for the per-client limits (failed token lookups,
sign-ins started): the proxy's word for it when the peer is a proxy we trust."""

from __future__ import annotations

import functools
import ipaddress
import logging

from app.settings import forwarder_network

logger = logging.getLogger(__name__)
_told: set[str] = set()  # peers whose X-Forwarded-For was ignored, logged once each


def limited_address(environ, forwarders: tuple[str, ...]) -> str:
    """The address a request counts against.

    That is the last X-Forwarded-For entry, which the proxy in front of us appends
    (docs/proxies/), when the connection's peer is a forwarder (FORWARDED_ALLOW_IPS, or a
    Unix socket, which only local processes reach: gunicorn trusts those too); else the
    peer itself, whatever it claims. An IPv6 client counts as its /64, which one host
    usually has to itself.
    """
    peer = environ.get("REMOTE_ADDR") or ""
    address = peer
    forwarded = environ.get("HTTP_X_FORWARDED_FOR")
    if forwarded:
        if is_forwarder(peer, forwarders):
            address = forwarded.rsplit(",", 1)[-1].strip()
        elif peer not in _told and len(_told) < 64:
            _told.add(peer)
            logger.warning(
                "X-Forwarded-For from %s, which FORWARDED_ALLOW_IPS does not list, is "
                "ignored: requests count against the peer's own address",
                peer[:64],
            )
    return _grouped(address[:64]) if address else "unknown"


@functools.lru_cache(maxsize=1024)
def is_forwarder(peer: str, forwarders: tuple[str, ...]) -> bool:
    if "*" in forwarders:
        return True
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:  # no IP address: a Unix socket's peer
        return True
    return any(address in network for network in _networks(forwarders))


@functools.lru_cache(maxsize=8)
def _networks(forwarders: tuple[str, ...]) -> tuple:
    return tuple(n for n in map(forwarder_network, forwarders) if n is not None)


@functools.lru_cache(maxsize=4096)
def _grouped(address: str) -> str:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if parsed.version == 6 and parsed.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return address
