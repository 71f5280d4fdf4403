"""Argument checks shared by the networks' constructors: one line naming the option, what it must be, what was given."""
from __future__ import annotations

import numbers
from typing import Any, Tuple


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def positive_int(name: str, value: Any) -> int:
    """``value`` as an int ≥ 1, else a ValueError."""
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def count(name: str, value: Any) -> int:
    """``value`` as an int ≥ 0, else a ValueError."""
    if not _is_int(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer; got {value!r}")
    return int(value)


def positive_ints(name: str, value: Any, allow_empty: bool = False) -> Tuple[int, ...]:
    """``value`` as a tuple of ints ≥ 1 (non-empty unless ``allow_empty``), else a TypeError / ValueError."""
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of positive integers; got {value!r}") from None
    if (not items and not allow_empty) or any(not _is_int(v) or v < 1 for v in items):
        raise ValueError(f"{name} must be a {'' if allow_empty else 'non-empty '}sequence of positive integers; "
                         f"got {value!r}")
    return tuple(int(v) for v in items)
