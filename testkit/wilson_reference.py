"""The Wilson interval by its definition, for tests: the proportions p that a two-sided score test at z does not
reject, found by bisection (no closed form shared with the code under test)."""

from __future__ import annotations

Z_95 = 1.959963984540054


def _rejected(p: float, k: int, n: int, z: float) -> bool:
    return (k / n - p) ** 2 > z * z * p * (1 - p) / n


def wilson_by_inversion(k: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """(low, high): the smallest and largest p in [0, 1] not rejected; (0, 1) for n = 0."""
    if n == 0:
        return 0.0, 1.0

    def edge(inside: float, outside: float) -> float:
        if not _rejected(outside, k, n, z):
            return outside
        for _ in range(200):
            middle = (inside + outside) / 2
            if _rejected(middle, k, n, z):
                outside = middle
            else:
                inside = middle
        return (inside + outside) / 2

    return edge(k / n, 0.0), edge(k / n, 1.0)
