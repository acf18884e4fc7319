"""Rules for one field of a record that arrives as JSON: what is wrong with a value, in words.

Each function returns why a value is refused (a phrase that follows the field's name:
``"must not be empty"``), or None when it is acceptable. The HTTP doors that take JSON records
(agent events, code-quality snapshots) and the worker's checks of the same records share them,
so a value one door takes the other does not refuse.

Examples
--------
>>> text_problem("", 256)
'must not be empty'
>>> count_problem(-3)
'must not be negative, got -3'
>>> epoch_ms_problem(1_700_000_000_000, now_ms=1_700_000_000_000, max_future_ms=3_600_000)
"""

from __future__ import annotations

import math
import re
import sys
from typing import Any

MAX_DOUBLE = sys.float_info.max
MAX_LONG = 2**63 - 1
# C0 and C1 control characters: line breaks, tabs, NUL, terminal escapes.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def text_problem(value: Any, most: int, empty: bool = False) -> str | None:
    """A string of at most ``most`` characters of valid Unicode (empty only when ``empty``)."""
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__} {value!r:.60}"
    if not value and not empty:
        return "must not be empty"
    if len(value) > most:
        return f"is {len(value)} characters long; at most {most} are allowed"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        return (
            f"is not valid Unicode: a lone surrogate {value[error.start]!r} at character "
            f"{error.start}; send UTF-8 text, or escape characters as surrogate pairs"
        )
    return None


def control_problem(value: str) -> str | None:
    """Text that names something (an entity, an agent, a task, a workflow) holds no control
    character: each name is printed on one line of an operator's terminal, of an alert's
    summary and of the audit trail, and NUL separates the worker's table keys.

    >>> control_problem("web-1\\nFIRING")
    "holds the control character '\\\\n' at 5; a name is one line of printable text"
    """
    found = _CONTROL.search(value)
    if found is None:
        return None
    return (
        f"holds the control character {found.group()!r} at {found.start()}; a name is one line "
        "of printable text"
    )


def one_line(text: str) -> str:
    """``text`` with every character a terminal or a mail header would act on (line breaks,
    escapes) written out as its escape sequence: a record's names, whoever wrote them, show
    as one line, and cannot move the cursor, recolour the operator's terminal or start a
    header of their own.

    >>> one_line("web-1\\nFIRING\\x1b[2J")
    'web-1\\\\nFIRING\\\\x1b[2J'
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def epoch_ms_problem(
    value: Any, now_ms: int, max_future_ms: int, max_age_ms: int | None = None
) -> str | None:
    """Integer epoch milliseconds, not negative, at most ``max_future_ms`` ahead of now and,
    with ``max_age_ms``, at most that far behind it."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be an integer of epoch milliseconds, got {value!r:.60}"
    if value < 0:
        return f"must not be negative, got {str(value)[:24]}"
    if value > now_ms + max_future_ms:
        # JSON integers have no bound: one past a long is still an answer, not an overflow.
        ahead = (value - now_ms) / 3_600_000 if value < 2**63 else math.inf
        return (
            f"{str(value)[:24]} is {ahead:.1f} h ahead of the receiver's clock ({now_ms}); at "
            f"most {max_future_ms / 3_600_000:g} h is allowed: send epoch milliseconds (not "
            "microseconds) and check the sender's clock"
        )
    return age_problem(value, now_ms, max_age_ms) if max_age_ms is not None else None


def age_problem(t_ms: int, now_ms: int, max_age_ms: int) -> str | None:
    """An event time no older than the topics keep: the worker refuses older events (the
    same words at the HTTP door and in the dead letter).

    >>> age_problem(0, now_ms=1_800_000_000_000, max_age_ms=168 * 3_600_000)
    '0 is 500000 h old, beyond retention (168 h, FORESIGHT_TOPIC_RETENTION_HOURS)'
    """
    if t_ms >= now_ms - max_age_ms:
        return None
    return (
        f"{t_ms} is {(now_ms - t_ms) / 3_600_000:.0f} h old, beyond retention "
        f"({max_age_ms / 3_600_000:g} h, FORESIGHT_TOPIC_RETENTION_HOURS)"
    )


def measure_problem(value: Any, most: float = MAX_DOUBLE) -> str | None:
    """A finite number, not negative, at most ``most``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number, got {value!r:.60}"
    if not -MAX_DOUBLE <= value <= MAX_DOUBLE:  # NaN, infinite, or an int past any double
        return f"must be finite and fit a double, got {str(value)[:24]}"
    if value < 0:
        return f"must not be negative, got {value}"
    if value > most:
        return f"must be at most {most:g}, got {value}"
    return None


def count_problem(value: Any) -> str | None:
    """A whole number, not negative, that fits a long."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be a whole number, got {value!r:.60}"
    if value < 0:
        return f"must not be negative, got {str(value)[:24]}"
    if value > MAX_LONG:
        return f"must fit a long (at most {MAX_LONG}), got {str(value)[:24]}…"
    return None
