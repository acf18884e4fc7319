"""Every series' model state of a worker, one row per series in a few shared arrays.

An entity owns a set of rows (:class:`SeriesArena.take`); a step of many entities hands the
models the concatenation of their rows, and each model reads and writes only the cells it
touches, in place. Per-entity arrays would have to be copied whole into one array for the
vectorised step and back again: the anomaly detector and the forecaster hold about 3,000
values per series (12 KB, mostly float32), of which a step changes a few dozen. Each part
keeps the dtype of its model's fresh rows, split rows (:func:`models.base.split_state`)
included.

Rows come back when their entity is gone (:meth:`SeriesArena.release`) and are reset when
they are taken again. The arrays grow by doubling; the rows past the ones in use are
allocated zeroed and untouched, so they cost address space, not memory.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from models.base import StateArray

IntArray = npt.NDArray[np.int64]
Initialiser = Callable[[int], StateArray]


class SeriesArena:
    """Named state arrays sharing one row per series.

    Parameters
    ----------
    parts
        Each part's name and how to make ``n`` fresh rows of it (a model's ``init_state``).

    Examples
    --------
    >>> arena = SeriesArena({"level": lambda n: np.full((n, 2), np.nan)})
    >>> rows = arena.take(3)
    >>> arena.parts["level"][rows[1]] = [1.0, 2.0]
    >>> arena.release(rows[:2])
    >>> again = arena.take(1)  # a released row, fresh again
    >>> int(again[0]) in rows[:2].tolist(), arena.parts["level"][again].tolist()
    (True, [[nan, nan]])
    """

    def __init__(self, parts: dict[str, Initialiser], rows: int = 1024) -> None:
        self._init = parts
        self.parts: dict[str, StateArray] = {}
        for name, make in parts.items():
            fresh = make(1)
            self.parts[name] = np.zeros((rows, *fresh.shape[1:]), dtype=fresh.dtype)
        self._free: list[int] = []
        self._used = 0  # rows ever handed out; the free list holds the returned ones

    @property
    def rows_in_use(self) -> int:
        return self._used - len(self._free)

    @property
    def row_bytes(self) -> int:
        """Bytes of state per row, over all parts."""
        return sum(array[0].nbytes for array in self.parts.values())

    @property
    def rows_allocated(self) -> int:
        """Rows the arrays have room for (past those ever used, untouched)."""
        return self._capacity

    def take(self, n: int) -> IntArray:
        """``n`` rows, each set to its parts' fresh state."""
        reused = [self._free.pop() for _ in range(min(n, len(self._free)))]
        new = n - len(reused)
        if self._used + new > self._capacity:
            self._grow(self._used + new)
        rows = np.array(reused + list(range(self._used, self._used + new)), dtype=np.int64)
        self._used += new
        for name, array in self.parts.items():
            array[rows] = self._init[name](n)
        return rows

    def release(self, rows: IntArray) -> None:
        """Give ``rows`` back (their entity is gone)."""
        self._free.extend(int(r) for r in rows)

    @property
    def _capacity(self) -> int:
        return int(next(iter(self.parts.values())).shape[0])

    def _grow(self, needed: int) -> None:
        rows = max(needed, 2 * self._capacity)
        for name, array in self.parts.items():
            grown = np.zeros((rows, *array.shape[1:]), dtype=array.dtype)
            grown[: self._used] = array[: self._used]
            self.parts[name] = grown
