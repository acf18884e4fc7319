"""A user's CSV file as rows of text: the one reader of ``foresight score`` and ``foresight
simulate --csv``, so both accept and refuse the same files.

UTF-8, with or without the byte-order mark a spreadsheet's "CSV UTF-8" export starts with
(otherwise the first column's name would carry it, and a ``timestamp`` header would not be
found). Any other encoding is refused by name, not with a codec's message.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path


def iter_rows(path: Path) -> Iterator[list[str]]:
    """The rows of ``path`` one at a time; raises ``OSError`` when it cannot be read and
    ``ValueError``, naming the file, at the first row that is not UTF-8 CSV."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            yield from csv.reader(handle)
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}: not UTF-8 text (byte {error.start}: {error.reason}); save it as UTF-8 CSV"
        ) from None
    except csv.Error as error:
        raise ValueError(f"{path}: not CSV ({error})") from None
