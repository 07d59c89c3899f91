"""Growth of a step with the dataset: the log-log exponent, the projection to a larger size, and where a
budget is crossed. Pure functions of the measured (frames, value) pairs."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["crossing", "exponent", "last_exponent", "project"]


def exponent(ns: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of log(y) against log(n) over every measured size (y ~ n^slope); None with fewer
    than two distinct sizes or a non-positive value."""
    if len(set(ns)) < 2 or len(ns) != len(ys) or min(ys) <= 0 or min(ns) <= 0:
        return None
    xs, ls = [math.log(n) for n in ns], [math.log(y) for y in ys]
    mx, my = sum(xs) / len(xs), sum(ls) / len(ls)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ls, strict=True)) / sum((x - mx) ** 2 for x in xs)


def last_exponent(ns: Sequence[float], ys: Sequence[float]) -> float | None:
    """The exponent between the two largest sizes (fixed start-up costs weigh less there)."""
    pairs = sorted(zip(ns, ys, strict=True))[-2:]
    return exponent([p[0] for p in pairs], [p[1] for p in pairs]) if len(pairs) == 2 else None


def project(ns: Sequence[float], ys: Sequence[float], n: float) -> float | None:
    """The value at ``n`` frames: the larger of (a) the power law through the largest measured size with the
    larger of the two exponents (`exponent`, `last_exponent`) and (b) the straight line through the two largest
    sizes (a fixed base plus a per-frame cost, which a power law fitted near the base underestimates). None
    with fewer than two sizes."""
    b, b_last = exponent(ns, ys), last_exponent(ns, ys)
    if b is None or b_last is None:
        return None
    (n1, y1), (n2, y2) = sorted(zip(ns, ys, strict=True))[-2:]
    power = y2 * (n / n2) ** max(b, b_last)
    line = y2 + (y2 - y1) / (n2 - n1) * (n - n2)
    return max(power, line)


def crossing(ns: Sequence[float], ys: Sequence[float], budget: float) -> float | None:
    """Frames at which the step reaches ``budget``, following the power law of `project` from the largest
    size (the line where it is steeper); None when it does not grow or has already crossed it."""
    b, b_last = exponent(ns, ys), last_exponent(ns, ys)
    if b is None or b_last is None:
        return None
    (n1, y1), (n2, y2) = sorted(zip(ns, ys, strict=True))[-2:]
    if y2 >= budget:
        return None
    candidates = []
    k = max(b, b_last)
    if k > 0 and math.log(budget / y2) / k < 700:  # beyond e^700 frames: never
        candidates.append(n2 * math.exp(math.log(budget / y2) / k))
    if y2 > y1:
        candidates.append(n2 + (budget - y2) * (n2 - n1) / (y2 - y1))
    return min(candidates) if candidates else None
