"""Range checks for a technique's numeric settings, with one message format.

Every technique checks its own settings when it is built (its factory, a
criterion's or scheme's `__post_init__`, a loss term's factory), before any
training step, so a setting that would train nonsense and exit 0 (N:M with
n = 0 pruning every weight, a NaN loss weight) is refused with a message
naming it. These helpers only format and test; which range is meaningful is
each module's decision. A refusal reads

    {name} must be {an integer | a finite number} {range} (got {value!r}); {fix}

e.g. "prune.n must be an integer >= 1 (got 0); n = 0 keeps no weight of a group".
Booleans are refused where a number is asked for (True would silently be 1),
and so are NaN and +-inf wherever a float is taken.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Optional

import numpy as np


def _is_bool(value: Any) -> bool:
    # numpy's bool is not a Python bool, but is no more a count than True is.
    return isinstance(value, (bool, np.bool_))


def describe_range(low: Optional[float] = None, high: Optional[float] = None, *,
                   low_open: bool = False, high_open: bool = False) -> str:
    """The range in words: '>= 1', '> 0', 'in [0, 1)', '' for no bound."""
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high}"
    return ""


def refusal(name: str, what: str, value: Any, fix: str = "") -> ValueError:
    """The ValueError of the format above: `what` is the expectation ('an integer >= 1')."""
    return ValueError(f"{name} must be {what} (got {value!r})" + (f"; {fix}" if fix else ""))


def require_int(name: str, value: Any, *, low: Optional[int] = None, high: Optional[int] = None,
                fix: str = "") -> int:
    """`value` as an int if it is an integer (not a bool) in [low, high] (either bound optional)."""
    bounds = describe_range(low, high)
    what = "an integer" + (f" {bounds}" if bounds else "")
    if _is_bool(value) or not isinstance(value, numbers.Integral):
        raise refusal(name, what, value, fix)
    if (low is not None and value < low) or (high is not None and value > high):
        raise refusal(name, what, value, fix)
    return int(value)


def require_float(name: str, value: Any, *, low: Optional[float] = None, high: Optional[float] = None,
                  low_open: bool = False, high_open: bool = False, fix: str = "") -> float:
    """`value` as a float if it is a finite real number (not a bool) within the bounds.

    `low_open` / `high_open` exclude the bound itself: low=0, low_open=True is '> 0'.
    """
    bounds = describe_range(low, high, low_open=low_open, high_open=high_open)
    what = "a finite number" + (f" {bounds}" if bounds else "")
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise refusal(name, what, value, fix)
    v = float(value)
    if not math.isfinite(v):
        raise refusal(name, what, value, fix)
    if low is not None and (v <= low if low_open else v < low):
        raise refusal(name, what, value, fix)
    if high is not None and (v >= high if high_open else v > high):
        raise refusal(name, what, value, fix)
    return v
