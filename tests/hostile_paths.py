"""The request paths of tests/data/hostile_paths.txt, shared by the unit and proxy tests."""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path

HOSTILE_PATHS = Path(__file__).parent / "data" / "hostile_paths.txt"


@dataclass(frozen=True, slots=True)
class HostilePath:
    path: str  # the request target as the proxy receives it, one character per byte
    judged: bool  # whether /auth may judge it (True) or must refuse it (False)
    line: int


def read_hostile_paths(source: Path = HOSTILE_PATHS) -> list[HostilePath]:
    """Every path in the data file, escapes decoded on ``esc:`` lines (see its header)."""
    found = []
    for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
        if not line or line.startswith("#"):
            continue
        judged = line.startswith("judged:")
        line = line.removeprefix("judged:")
        if line.startswith("esc:"):
            line = codecs.decode(line.removeprefix("esc:"), "unicode_escape")
        found.append(HostilePath(line, judged, number))
    return found
