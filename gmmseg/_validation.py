"""Checks of user-facing arguments, shared by the settings table and the
models. Each returns the value normalised (``int``, ``float``, ``str``,
``tuple``) or raises ``ValueError`` with a message that says what to give
instead. (The engine keeps its own checks: it imports nothing of gmmseg.)
"""

import math
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np


def _bounds_text(minimum, maximum, exclusive_minimum=False, exclusive_maximum=False):
    parts = []
    if minimum is not None:
        parts.append(f"{'>' if exclusive_minimum else '>='} {minimum:g}")
    if maximum is not None:
        parts.append(f"{'<' if exclusive_maximum else '<='} {maximum:g}")
    return " and ".join(parts)


def check_int(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer within bounds (bools and floats are refused)."""
    bounds = _bounds_text(minimum, maximum)
    wanted = "a positive integer" if minimum == 1 and maximum is None else f"an integer{' ' + bounds if bounds else ''}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be {wanted}, got {value!r}.")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {wanted}, got {value}.")
    return value


def check_number(
    value: Any,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
    exclusive_maximum: bool = False,
) -> float:
    """A finite real number within bounds."""
    bounds = _bounds_text(minimum, maximum, exclusive_minimum, exclusive_maximum)
    wanted = f"a finite number{' ' + bounds if bounds else ''}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be {wanted}, got {value!r}.")
    try:
        value = float(value)
    except OverflowError:  # an integer beyond any float
        raise ValueError(f"{name} must be {wanted}, got an integer of {len(str(abs(value)))} digits.") from None
    too_low = minimum is not None and (value <= minimum if exclusive_minimum else value < minimum)
    too_high = maximum is not None and (value >= maximum if exclusive_maximum else value > maximum)
    if not math.isfinite(value) or too_low or too_high:
        raise ValueError(f"{name} must be {wanted}, got {value!r}.")
    return value


def check_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    """One of a fixed set of strings."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}.")
    return value


def check_bool(value: Any, name: str) -> bool:
    """True or False (not 0/1 or strings)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}.")
    return bool(value)


def check_int_list(value: Any, name: str, *, minimum: int = 1, maximum: int | None = None,
                   max_length: int | None = None) -> tuple[int, ...]:
    """Integers >= minimum (and <= maximum) (e.g. ``range(1, 9)``), returned
    sorted without repeats; at least one (and at most ``max_length``)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ValueError(f"{name} must be integers >= {minimum} such as range(1, 9), got {value!r}.")
    if isinstance(value, range) and len(value) > 0:
        # A range says its ends and length without being walked through
        # (range(1, 10**12) must fail at once, not after a long loop).
        for end in (value[0], value[-1]):
            check_int(end, name, minimum=minimum, maximum=maximum)
        if max_length is not None and len(value) > max_length:
            raise ValueError(f"{name} must hold at most {max_length} values, got {len(value)}.")
    items = tuple(sorted({check_int(v, name, minimum=minimum, maximum=maximum) for v in value}))
    if max_length is not None and len(items) > max_length:
        raise ValueError(f"{name} must hold at most {max_length} values, got {len(items)}.")
    if not items:
        raise ValueError(f"{name} must hold at least one integer >= {minimum}, got none.")
    return items
