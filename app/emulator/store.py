"""The records' qualifications as they stand: the fixtures' items plus what clients wrote.

Shared by the server's threads, so every read and change holds one lock. ``reset()``
puts every record back as the fixtures describe it; put-codes are never reused.
"""

from __future__ import annotations

import threading

from app.emulator.personas import Fixtures, Qualification

# Put-codes for items written through the API start well above any fixture's.
FIRST_WRITTEN_PUT_CODE = 100_000


class RecordStore:
    """Each record's qualifications, by iD, in the order ORCID lists them (oldest first)."""

    def __init__(self, fixtures: Fixtures):
        self._fixtures = fixtures
        self._lock = threading.Lock()
        # Held by a write from its duplicate check to its change, so two equal POSTs at
        # once still leave one item.
        self.writing = threading.Lock()
        self._items: dict[str, list[Qualification]] = {}
        self._next_put_code = FIRST_WRITTEN_PUT_CODE
        self.reset()

    def reset(self) -> None:
        """Forget every write: each record holds its fixture's items again."""
        with self._lock:
            self._items = {p.orcid: list(p.qualifications) for p in self._fixtures.personas}
            highest = max((q.put_code for items in self._items.values() for q in items), default=0)
            # Never back: a put-code handed out before a reset is never handed out again.
            self._next_put_code = max(self._next_put_code, highest + 1)

    def items(self, orcid: str) -> list[Qualification]:
        with self._lock:
            return list(self._items.get(orcid, ()))

    def item(self, orcid: str, put_code: int) -> Qualification | None:
        with self._lock:
            return next((q for q in self._items.get(orcid, ()) if q.put_code == put_code), None)

    def next_put_code(self) -> int:
        """A put-code no item has had (ORCID never reuses one)."""
        with self._lock:
            put_code = self._next_put_code
            self._next_put_code += 1
            return put_code

    def add(self, orcid: str, item: Qualification) -> None:
        with self._lock:
            self._items.setdefault(orcid, []).append(item)

    def replace(self, orcid: str, item: Qualification) -> None:
        """Put ``item`` in the place of the item with its put-code."""
        with self._lock:
            items = self._items.setdefault(orcid, [])
            for index, old in enumerate(items):
                if old.put_code == item.put_code:
                    items[index] = item
                    return
            items.append(item)

    def delete(self, orcid: str, put_code: int) -> bool:
        """Remove the item; whether there was one."""
        with self._lock:
            items = self._items.get(orcid, [])
            kept = [q for q in items if q.put_code != put_code]
            self._items[orcid] = kept
            return len(kept) != len(items)
