"""The values a setting may take, declared beside the setting and checked when settings load;
and the same for a command-line option (:func:`option`).

A value outside its domain is refused at once, naming the setting and what it allows, rather
than failing later inside a library (``FORESIGHT_STEP_S=0`` was a ``ZeroDivisionError`` at the
worker's first step, ``-10`` a worker that never stepped). The README's settings table shows
each domain (:func:`streams.settings.settings_table`).

>>> Between(0, above=True).problem(0.0)
'must be above 0'
>>> Between(1, 65535).problem(8080) is None
True
>>> Between(0).problem(float("nan"))
'must be a number at least 0'
>>> OneOf(("earliest", "latest")).problem("middle")
'must be one of earliest, latest'
>>> Scheme(("redis", "rediss", "unix")).problem("http://cache:6379")
'must be a URL starting redis://, rediss:// or unix://'
>>> Matches(r"[a-z]+", "lower-case letters").problem("Web 1")
'must be lower-case letters'
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


class Domain(Protocol):
    """What a setting allows: ``problem`` says what is wrong with a value (``None``: nothing),
    and ``str()`` says what is allowed, for the README."""

    def problem(self, value: Any) -> str | None: ...


@dataclass(frozen=True)
class Between:
    """Finite numbers from ``low`` (excluded when ``above``) to ``high`` (excluded when
    ``below``); ``None``: unbounded."""

    low: float | None = None
    high: float | None = None
    above: bool = False
    below: bool = False

    def __str__(self) -> str:
        closed = not (self.above or self.below)
        if self.low is not None and self.high is not None and closed:
            return f"{self.low:g} to {self.high:g}"
        bounds = []
        if self.low is not None:
            bounds.append(f"{'above' if self.above else 'at least'} {self.low:g}")
        if self.high is not None:
            bounds.append(f"{'below' if self.below else 'at most'} {self.high:g}")
        return " and ".join(bounds) or "any number"

    def problem(self, value: Any) -> str | None:
        if not math.isfinite(value):
            return f"must be a number {self}"
        low, high = self.low, self.high
        too_low = low is not None and (value <= low if self.above else value < low)
        too_high = high is not None and (value >= high if self.below else value > high)
        return f"must be {self}" if too_low or too_high else None


@dataclass(frozen=True)
class OneOf:
    """One of ``values``; in any case of letters when ``any_case``."""

    values: tuple[str, ...]
    any_case: bool = False

    def __str__(self) -> str:
        return "one of " + ", ".join(self.values) + (" (any case)" if self.any_case else "")

    def problem(self, value: Any) -> str | None:
        allowed = {v.upper() for v in self.values} if self.any_case else set(self.values)
        seen = str(value).upper() if self.any_case else value
        return None if seen in allowed else f"must be {self}"


@dataclass(frozen=True)
class Scheme:
    """A URL with one of ``schemes``, or else empty when ``empty`` (the setting's default
    then stands for something else, said in its description)."""

    schemes: tuple[str, ...]
    empty: bool = False

    def __str__(self) -> str:
        listed = [f"{scheme}://" for scheme in self.schemes]
        text = "a URL starting " + (
            listed[0] if len(listed) == 1 else ", ".join(listed[:-1]) + " or " + listed[-1]
        )
        return text + (", or empty" if self.empty else "")

    def problem(self, value: Any) -> str | None:
        if self.empty and value == "":
            return None
        scheme, sep, _ = str(value).partition("://")
        return None if sep and scheme.lower() in self.schemes else f"must be {self}"


@dataclass(frozen=True)
class Matches:
    """Text that ``pattern`` matches whole; ``what`` says so in words."""

    pattern: str
    what: str

    def __str__(self) -> str:
        return self.what

    def problem(self, value: Any) -> str | None:
        return None if re.fullmatch(self.pattern, str(value)) else f"must be {self}"


def option(domain: Domain, kind: Callable[[str], Any] = float) -> Callable[[str], Any]:
    """An argparse ``type`` that reads an option as ``kind`` and holds it to ``domain``, so a
    bad value is refused by argparse, naming the option (``argument --speed: must be at least
    0, got -1``), rather than taken for another meaning or failing later.

    >>> option(Between(1), int)("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be at least 1, got 0
    """

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be {getattr(kind, '__name__', kind)}, got {text!r}"
            ) from None
        problem = domain.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(f"{problem}, got {text}")
        return value

    return parse
