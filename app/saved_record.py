"""A saved ORCID record: the qualifications summary and items together in one JSON file.

Format (every ORCID part exactly as the v3.0 API returns it)::

    {
      "orcid": "0000-0002-1825-0097",
      "qualifications": { ...body of GET /v3.0/{orcid}/qualifications... },
      "items": { "1234": { ...body of GET /v3.0/{orcid}/qualification/1234... } },
      "error": { ...optional ORCID error body, to replay a failure... }
    }

``items`` may leave out put-codes: the summary entry then stands in for the item.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from app.errors import GatekeeperError, MalformedResponse, error_from_orcid
from app.orcid_id import parse_orcid_id
from app.qualifications import Qualification, UnreadableItem, parse_summaries, read_item


class SavedRecordError(GatekeeperError):
    reason = "saved_record_error"


class SavedRecord:
    """Reads qualifications from a saved file with the same interface as ``OrcidClient``."""

    def __init__(self, data: dict, origin: str = "saved record"):
        """:raises SavedRecordError: when ``data`` or its ``error`` has the wrong shape."""
        if not isinstance(data, dict):
            raise SavedRecordError(f"{origin}: expected a JSON object")
        self.data, self.origin = data, origin
        error = data.get("error")
        if error is not None:
            if not isinstance(error, dict):
                raise SavedRecordError(f"{origin}: 'error' must be an ORCID error object")
            code = error.get("response-code")
            if isinstance(code, bool) or not isinstance(code, int):
                raise SavedRecordError(
                    f"{origin}: 'error' response-code must be a whole number, "
                    f"like 409, not {code!r}"
                )
        raw = data.get("orcid")
        self.orcid = parse_orcid_id(raw) if raw else None

    @classmethod
    def from_file(cls, path: str | Path) -> SavedRecord:
        """:raises SavedRecordError: when the file is missing or not JSON."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise SavedRecordError(f"cannot read {path}: {exc.strerror}") from exc
        except (ValueError, RecursionError) as exc:
            raise SavedRecordError(f"{path} is not JSON: {exc}") from exc
        return cls(data, str(path))

    def read_qualifications(
        self,
        orcid: str,
        wanted: Callable[[Qualification | UnreadableItem], bool] = lambda q: True,
        token: str | None = None,
    ) -> list[Qualification | UnreadableItem]:
        """The qualifications the file holds, items preferred over summaries.

        :raises OrcidError: replaying the file's ``error``, or for a malformed file.
        """
        orcid = parse_orcid_id(orcid)
        if self.orcid and self.orcid != orcid:
            raise SavedRecordError(f"{self.origin} holds the record of {self.orcid}, not {orcid}")
        error = self.data.get("error")
        if error is not None:
            raise error_from_orcid(error["response-code"], error)
        if "qualifications" not in self.data:
            raise MalformedResponse(f"{self.origin} has no 'qualifications' summary.")
        items = self.data.get("items") or {}
        if not isinstance(items, dict):
            raise MalformedResponse(f"{self.origin}: 'items' must map put-codes to items.")
        result = []
        for summary in parse_summaries(self.data["qualifications"]):
            if not wanted(summary):
                continue
            item = items.get(str(summary.put_code))
            if item is None:
                result.append(summary)
                continue
            full = read_item(item)
            if full.put_code != summary.put_code:  # as the live reader: not the item asked for
                full = UnreadableItem(summary.put_code, summary.title, "another item's put-code")
            result.append(full)
        return result
