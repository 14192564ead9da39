"""The path a proxy is about to serve, reduced to the one meaning every server agrees on.

A reverse proxy hands ``/auth`` the URL of the request it is about to pass on, and the
file server behind it resolves that URL by its own rules. The check is sound only if both
read the same path. Servers agree on little beyond this: percent-escapes are decoded
once, and ``.`` and ``..`` segments are resolved. Wherever they are known to disagree, the
path is refused (``None``), so the check fails closed:

- ``;`` raw or as ``%3B``: servlet containers (Tomcat, Jetty) drop ``;params`` from each
  segment before they resolve ``..``, so ``/a/..;/b/`` is ``/b/`` to them and ``/a/..;/b/``
  (a folder named ``..;``) to everyone else;
- ``%25`` and any ``%`` not followed by two hex digits: a server (or a proxy in front of
  one) that decodes twice reads ``%252e%252e`` as ``..``;
- ``%2F`` and backslashes (raw or ``%5C``): some servers split segments on them after
  decoding, or on Windows treat ``\\`` as ``/``; others take them as part of a name;
- ``.`` or ``..`` spelt with escapes (``%2e%2e``), and other segments of only dots and
  spaces (``...``, ``..%20``): some servers resolve them after decoding, others before,
  others never, and Windows drops trailing dots and spaces from a name;
- empty segments (``//`` anywhere, a leading one included): RFC 3986 counts them when
  resolving ``..``, most file servers collapse them first, and ``//host/...`` reads as a
  host to a URL parser;
- ``..`` above the root: some clamp it at ``/``, others refuse the request;
- ``#``: never part of a request sent by a browser, and a path to some servers;
- NUL, control characters and anything outside ASCII, raw or after decoding:
  servers strip, reject, truncate at or Unicode-normalise them differently.

NOTE: stdlib only, no Flask: the policy checker validates dataset ``paths`` with
``normalize_path`` as well.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

# An original URL is a full URL only when it starts with a scheme (RFC 3986, 3.1);
# anything else is a path, whatever its query holds (``/a?next=https://b``).
SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")

# Raw characters refused anywhere in the path: outside printable ASCII, or ``;``, ``\``
# and ``#`` (see the module docstring), or an empty segment. A raw space passes: no
# request line can carry one, but a dataset's ``paths`` entry is written decoded.
_REFUSED_RAW = re.compile(r"[^ -~]|[;\\#]|//")
# A path that needs no work: segments of plain characters, none of them starting with a
# dot, so none is a dot segment and nothing is encoded.
_PLAIN = re.compile(r"(?:/[A-Za-z0-9_~!$&'()*+,=:@-][A-Za-z0-9._~!$&'()*+,=:@-]*)+/?|/")
_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Bytes a decoded segment may hold: printable ASCII and the space (``two%20words.txt``),
# but not those that change how a path splits or decodes.
_REFUSED_DECODED = frozenset(b"/\\;%") | frozenset(range(0x20)) | frozenset(range(0x7F, 0x100))


def path_of(original: str) -> str:
    """The raw path of an original URL: a full URL's path, or everything before ``?``."""
    match = SCHEME.match(original) if "://" in original else None
    if match:
        rest = original[match.end() :]
        cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
        original = rest[cut:]
        if not original.startswith("/"):
            return ""  # no path at all (``https://host`` or ``https://host?x``)
    return original.split("?", 1)[0]


def normalize_path(raw: str) -> str | None:
    """The clean absolute path that ``raw`` (a path or a full URL) names; None if hostile.

    The query is dropped; escapes are decoded once and dot segments resolved. A path that
    servers could read differently is None (see the module docstring). A trailing ``/``
    is kept, as is the trailing slash a final ``.`` or ``..`` stands for.
    """
    if not raw:
        return None
    path = path_of(raw)
    if _PLAIN.fullmatch(path):  # most requests: nothing to decode or resolve
        return path
    if not path.startswith("/") or _REFUSED_RAW.search(path):
        return None
    if _ESCAPE.search(path):
        return None
    segments: list[str] = []
    raw_segments = path.split("/")[1:]
    for segment in raw_segments:
        if segment == ".":
            continue
        if segment == "..":
            if not segments:
                return None  # above the root
            segments.pop()
            continue
        if "%" in segment:
            decoded = unquote_to_bytes(segment)
            if _REFUSED_DECODED.intersection(decoded):
                return None
            segment = decoded.decode("ascii")
        if segment and not segment.strip(". "):
            return None  # %2e%2e, "...", ".. ": a dot segment to some servers, a name to others
        segments.append(segment)
    clean = "/" + "/".join(segments)
    if raw_segments[-1] in ("", ".", "..") and not clean.endswith("/"):
        clean += "/"
    return clean


def path_has_prefix(path: str, prefix: str) -> bool:
    """Whether the clean ``path`` lies under the ``paths`` prefix ``prefix``."""
    if path.startswith(prefix):
        # /data/a must not match /data/ab: the prefix ends at a segment boundary.
        return prefix.endswith("/") or len(path) == len(prefix) or path[len(prefix)] == "/"
    # "/datasets/x" asks for the same thing as the prefix "/datasets/x/"
    return prefix.endswith("/") and path == prefix[:-1]
