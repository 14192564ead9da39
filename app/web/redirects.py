"""Choose where to send a user after sign-in, refusing anything that could leave our hosts.

The ``next`` value arrives from the request, so an unchecked one turns /login into an open
redirect. Browsers repair malformed URLs before following them (they drop tabs and newlines,
read ``\\`` as ``/``, fold fullwidth letters), so a target we would have to guess about is
refused, not repaired.
"""

import unicodedata
from urllib.parse import unquote, urlsplit

MAX_LENGTH = 2048
_DEFAULT_PORTS = {"http": 80, "https": 443}
# NOTE: a path that still changes after this many rounds of percent-decoding is refused:
# no honest link is encoded four times over.
_DECODE_ROUNDS = 4


def safe_next(
    target: str | None,
    allowed_hosts: frozenset[str] | set[str] | tuple[str, ...] = (),
    default: str = "/",
) -> str:
    """Return ``target`` if a signed-in user may be redirected there, otherwise ``default``.

    Allowed are a path on this site (one leading ``/``, no empty or dot segments, also once
    percent-decoded) and an http(s) URL whose ``host`` or ``host:port`` matches an entry of
    ``allowed_hosts`` exactly (case aside), and whose path a path on this site could have;
    an entry without a port allows any port, and a URL without one means its scheme's
    default. An entry written as an origin (``https://host``) also pins the scheme, and
    its default port. Anything that is not printable ASCII, holds a
    backslash or a control character (raw or percent-encoded), carries userinfo, or is longer
    than ``MAX_LENGTH`` is refused. Internationalised hosts must be listed in punycode.
    """
    if not isinstance(target, str) or not target or len(target) > MAX_LENGTH:
        return default
    # A URL on the wire is printable ASCII; spaces, controls and look-alike letters are what
    # a browser rewrites after we have judged the string, so they are refused outright.
    if not all("!" <= char <= "~" for char in target) or "\\" in target:
        return default
    decoded = _percent_decoded(target)
    if decoded is None or not _is_plain_text(decoded):
        return default
    if target.startswith("/"):
        # The decoded forms matter because a proxy or a second redirect may decode once more:
        # /%2F%2Fevil.com is harmless as sent but becomes //evil.com after one unquote.
        forms = (target, decoded, unicodedata.normalize("NFKC", decoded))
        return target if all(_is_local_path(form) for form in forms) else default
    return target if _is_allowed_url(target, allowed_hosts) else default


def _percent_decoded(text: str) -> str | None:
    """Undo percent-encoding until nothing changes; None if it never settles."""
    for _ in range(_DECODE_ROUNDS):
        decoded = unquote(text)
        if decoded == text:
            return text
        text = decoded
    return None


def _is_plain_text(text: str) -> bool:
    """Whether decoded text is free of backslashes, control, format and separator characters."""
    if "\\" in text:
        return False
    for char in text:
        category = unicodedata.category(char)
        if category[0] == "C" or (category[0] == "Z" and char != " "):
            return False
    return True


def _is_local_path(form: str) -> bool:
    """Whether ``form`` is a path on this site with no empty, dot or padded segments."""
    if not form.startswith("/") or form.startswith("//"):
        return False
    parts = urlsplit(form)
    if parts.scheme or parts.netloc:
        return False
    # Empty and dot segments are where //evil.com hides once someone normalises the path
    # (/.//evil.com, /..//evil.com); a segment padded with spaces invites the same trimming.
    *inner, last = parts.path.split("/")[1:]
    if any(segment in ("", ".", "..") for segment in inner) or last in (".", ".."):
        return False
    return all(segment == segment.strip() for segment in (*inner, last))


def _is_allowed_url(target: str, allowed_hosts) -> bool:
    """Whether ``target`` is an http(s) URL whose host and port an allowed entry names."""
    try:
        parts = urlsplit(target)
    except ValueError:
        return False
    default_port = _DEFAULT_PORTS.get(parts.scheme)
    # http:evil.com and https:/evil.com have a scheme but no "//"; browsers still guess a host.
    if default_port is None or not target[len(parts.scheme) :].startswith("://"):
        return False
    split = _host_and_port(parts.netloc)
    if split is None:
        return False
    host, port = split
    port = default_port if port is None else port
    if not any(_names(entry, parts.scheme, host, port) for entry in allowed_hosts):
        return False
    # The path must be one a local target could have: https://host//evil.com would
    # become //evil.com wherever something takes the path alone.
    local = target[len(parts.scheme) + 3 + len(parts.netloc) :]
    local = local if local.startswith("/") else "/" + local  # https://host?x=1 is /?x=1
    decoded = _percent_decoded(local)
    forms = (local, decoded, unicodedata.normalize("NFKC", decoded)) if decoded else ()
    return bool(forms) and all(_is_local_path(form) for form in forms)


def _names(entry, scheme: str, host: str, port: int) -> bool:
    """Whether an allowed entry (``host``, ``host:port`` or ``scheme://host[:port]``) names
    this scheme, host and port."""
    if not isinstance(entry, str):
        return False
    pinned, _, netloc = entry.rpartition("://")
    if pinned and pinned.lower() != scheme:
        return False
    allowed = _host_and_port(netloc)
    if allowed is None or allowed[0] != host:
        return False
    if pinned:
        return (allowed[1] or _DEFAULT_PORTS.get(scheme)) == port
    return allowed[1] in (None, port)


def _host_and_port(netloc: str) -> tuple[str, int | None] | None:
    """Split ``host`` or ``host:port``; None for anything more (userinfo, brackets, ``host:``)."""
    try:
        parts = urlsplit("//" + netloc)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    # Rebuilding the netloc and comparing refuses every form urllib and a browser might read
    # differently: user@host, [v6], an empty or zero-padded port.
    if not host or netloc.lower() != (host if port is None else f"{host}:{port}"):
        return None
    return host, port
