"""Text typed by others, made safe to show one line at a time.

ORCID strings (titles, organisation and source names) are typed by researchers and
providers. Shown raw, inside a line of the command line's output, a steward console's
``<pre>`` or a CSV cell, a newline could forge another line, and a bidi override or an
escape sequence could make a refused item read as met.
"""

from __future__ import annotations

import unicodedata

# Characters that move, hide or recolour text on a terminal: C0 and C1 controls (ESC
# starts a terminal command), bidi marks, embeddings, overrides and isolates (U+200E/F,
# U+202A-202E, U+2066-2069: "Trojan Source"), zero-width and other format characters,
# the line and paragraph separators, and lone surrogates (unprintable as UTF-8).
UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def printable(text: str) -> str:
    """``text`` with each control, bidi or other invisible character as a \\uXXXX escape.

    Letters of every script, accents and emoji pass unchanged.
    """
    if text.isascii() and text.isprintable():
        return text
    return "".join(_escape(c) if unicodedata.category(c) in UNSAFE_CATEGORIES else c for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
