"""HTTP Range (RFC 9110, section 14) for serving ciphertext: one range of bytes, or none.

The page fetches a document with ``bytes=N-``, from 0 or from where a dropped connection
stopped, under the document's grant (a range never does without one). Only a single
``bytes`` range is served; anything else is refused with 416 rather than guessed at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SPEC = re.compile(r"bytes=(\d*)-(\d*)", re.ASCII | re.IGNORECASE)


class RangeNotSatisfiable(ValueError):
    """A Range header that is malformed, has several ranges, or lies outside the object."""


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # exclusive

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end - 1}/{size}"

    @property
    def length(self) -> int:
        return self.end - self.start


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """None when there is no Range header: the whole object is asked for."""
    if header is None:
        return None
    found = _SPEC.fullmatch(header.strip().replace(" ", ""))
    if found is None:
        raise RangeNotSatisfiable(header)
    first, last = found.groups()
    if not first:
        if not last or int(last) == 0:
            raise RangeNotSatisfiable(header)
        return ByteRange(max(0, size - int(last)), size)
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if start >= size or end <= start:
        raise RangeNotSatisfiable(header)
    return ByteRange(start, end)
