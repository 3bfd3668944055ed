"""Argument range checks for constructors, the single place a value's range is decided.

Every failure is a ``ValueError`` whose message starts with ``<argument>=<value>: `` so that
the config layer (:func:`retina.utils.instantiate.instantiate_node`) can name the dotted key
(``loss.gamma: must satisfy 0 <= value, got -0.5``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def _fail(name: str, value: Any, need: str) -> ValueError:
    return ValueError(f"{name}={value!r}: {need}")


def check_number(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
) -> float | None:
    """``value`` as a float inside the interval (``None`` passes when ``optional``)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(name, value, "must be a finite number" + (" or null" if optional else ""))
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        lo = "" if low is None else f"{low} {'<' if low_open else '<='} "
        hi = "" if high is None else f" {'<' if high_open else '<='} {high}"
        raise _fail(name, value, f"must satisfy {lo}value{hi}")
    return float(value)


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(name, value, f"must be an integer >= {minimum}")
    return int(value)


def check_positive_list(name: str, value: Any) -> tuple[float, ...]:
    """A non-empty sequence of positive finite numbers."""
    ok = (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) > 0
        and all(
            not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and v > 0
            for v in value
        )
    )
    if not ok:
        raise _fail(name, value, "must be a non-empty list of positive numbers")
    return tuple(float(v) for v in value)
