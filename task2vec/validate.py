"""One place that checks numbers: finite reals in range, integers, seeds, embedding vectors.

The library's constructors call :func:`number`, :func:`integer` and :func:`seed` with the
:class:`~task2vec.errors.Task2VecError` subclass of their module; the command line's flags take
:func:`number_flag`, :func:`integer_flag` and :func:`seed_flag` as their argparse ``type``, built
from the same checks, so NaN, inf, a negative seed or a word where a number belongs is refused by
name before any work starts. :func:`embedding_array` and :func:`embedding_values` refuse vectors
d_sym is undefined for (the zoo index and MODEL2VEC take raw arrays). Imports no torch, and numpy
only inside the array checks (numpy's scalars are ``numbers.Real``), so the command line starts fast.
"""

from __future__ import annotations

import argparse
import math
import numbers
from typing import TYPE_CHECKING, Callable

from .errors import SettingError, Task2VecError

if TYPE_CHECKING:
    import numpy as np

SEED_LIMIT = 2 ** 32  # seeds are integers in [0, 2**32): what numpy, torch and every platform accept


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    """The range in words: ``>= 0``, ``> 0``, ``<= 1``, ``in [0, 1)``; empty when unbounded."""
    def text(x: float) -> str:
        return str(x) if isinstance(x, int) else f"{x:g}"

    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{text(low)}, {text(high)}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {text(low)}"
    if high is not None:
        return f"{'<' if high_open else '<='} {text(high)}"
    return ""


def _number_problem(value: object, low: float | None, high: float | None, low_open: bool,
                    high_open: bool) -> str | None:
    """What is wrong with ``value`` as a real number in the range (None: nothing)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return f"must be a number, got {value!r}"
    try:
        x = float(value)
    except OverflowError:  # an int beyond any float
        x = math.inf
    if not math.isfinite(x):
        return f"must be a finite number, got {x}"
    below = low is not None and (x <= low if low_open else x < low)
    above = high is not None and (x >= high if high_open else x > high)
    if below or above:
        kind = "a positive number" if (low == 0 and low_open and high is None) else \
            f"a number {_interval(low, high, low_open, high_open)}"
        return f"must be {kind}, got {int(value) if isinstance(value, numbers.Integral) else x!r}"  # numpy scalars as plain
    return None


def _integer_problem(value: object, low: int | None, high: int | None, high_open: bool) -> str | None:
    """What is wrong with ``value`` as an integer in the range (None: nothing)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return f"must be an integer, got {value!r}"
    if (low is not None and value < low) or (high is not None and (value >= high if high_open else value > high)):
        return f"must be an integer {_interval(low, high, False, high_open)}, got {int(value)}"
    return None


def number(value: object, name: str, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False,
           error: type[Task2VecError] = SettingError) -> float:
    """``value`` as a float; not a real number, NaN, inf or outside the range is an ``error``
    naming ``name`` (``low_open``/``high_open``: the bound itself is excluded)."""
    problem = _number_problem(value, low, high, low_open, high_open)
    if problem:
        raise error(f"{name} {problem}")
    return float(value)  # type: ignore[arg-type]


def integer(value: object, name: str, *, low: int | None = None, high: int | None = None, high_open: bool = False,
            error: type[Task2VecError] = SettingError) -> int:
    """``value`` as an int; a float, a bool or a value outside the range is an ``error`` naming ``name``."""
    problem = _integer_problem(value, low, high, high_open)
    if problem:
        raise error(f"{name} {problem}")
    return int(value)  # type: ignore[call-overload]


def seed(value: object, name: str = "seed", *, error: type[Task2VecError] = SettingError) -> int:
    """A random seed: an integer in ``[0, 2**32)``."""
    return integer(value, name, low=0, high=SEED_LIMIT, high_open=True, error=error)


def number_flag(*, low: float | None = None, high: float | None = None, low_open: bool = False,
                high_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: the text as a finite float in the range (the parser names the flag)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        problem = _number_problem(value, low, high, low_open, high_open)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse.__name__ = "number"  # argparse names the type in its own messages
    return parse


def integer_flag(*, low: int | None = None, high: int | None = None,
                 high_open: bool = False) -> Callable[[str], int]:
    """An argparse ``type``: the text as an integer in the range."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        problem = _integer_problem(value, low, high, high_open)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse.__name__ = "integer"
    return parse


def seed_flag() -> Callable[[str], int]:
    """An argparse ``type``: a random seed in ``[0, 2**32)``."""
    return integer_flag(low=0, high=SEED_LIMIT, high_open=True)


def embedding_array(value: object, name: str, *, ndim: int | tuple[int, ...],
                    error: type[Task2VecError] = SettingError) -> "np.ndarray":
    """``value`` as a non-empty float64 array of ``ndim`` dimensions (1: one vector, 2: rows x filters;
    a tuple allows several) whose values d_sym accepts (:func:`embedding_values`)."""
    import numpy as np

    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise error(f"{name} must be a numeric array ({type(exc).__name__})") from None
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if a.ndim not in allowed or not a.size:
        kinds = " or ".join("1-D vector" if n == 1 else "2-D array (rows x filters)" for n in allowed)
        raise error(f"{name} must be a non-empty {kinds}, got shape {a.shape}")
    embedding_values(a, name, error=error)
    return a


def embedding_values(rows: "np.ndarray", name: str, *, error: type[Task2VecError] = SettingError,
                     first_row: int = 0) -> None:
    """Refuse values d_sym is undefined for: NaN, inf, negative entries, an all-zero row.

    ``rows``: one vector (entries named ``name[j]``) or rows x filters (``name[i, j]``, ``i``
    counted from ``first_row`` when ``rows`` is a chunk of a larger stack). Two reductions per
    row; the offending entry is located only when there is one.
    """
    import numpy as np

    one = rows.ndim == 1
    A = rows[None] if one else rows
    if not A.size:
        return
    lo, hi = A.min(1), A.max(1)  # NaN propagates through both
    for bad_row, bad_entry, what in ((~(np.isfinite(lo) & np.isfinite(hi)), lambda r: ~np.isfinite(r), "is not finite"),
                                     (lo < 0, lambda r: r < 0, "is negative")):
        if bad_row.any():
            i = int(np.flatnonzero(bad_row)[0])
            j = int(np.flatnonzero(bad_entry(A[i]))[0])
            where = f"{name}[{j}]" if one else f"{name}[{first_row + i}, {j}]"
            raise error(f"{where} = {A[i, j].item()!r} {what} (embeddings must be finite and non-negative)")
    empty = hi <= 0
    if empty.any():
        where = name if one else f"{name}[{first_row + int(np.flatnonzero(empty)[0])}]"
        raise error(f"{where} is all zeros (d_sym is undefined for it)")
