"""The Wilson score interval for a proportion: honest at small n and near 0 or 1, where the normal interval is not.

Used for the fraction of neurons raters judged interpretable, and to rank neurons by how surely their top examples
share one peak token (a share of 3 out of 3 is less sure than 18 out of 20).
"""

from __future__ import annotations

import numpy as np

Z_95 = 1.959963984540054  # the two-sided 95% normal quantile


def wilson_interval(successes: np.ndarray | int, n: np.ndarray | int, z: float = Z_95) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of the Wilson interval for successes out of n, element-wise; (0, 1) where n is 0."""
    k = np.asarray(successes, dtype=np.float64)
    total = np.asarray(n, dtype=np.float64)
    safe = np.where(total > 0, total, 1.0)
    share = k / safe
    denominator = 1 + z**2 / safe
    centre = (share + z**2 / (2 * safe)) / denominator
    half = z / denominator * np.sqrt(share * (1 - share) / safe + z**2 / (4 * safe**2))
    low = np.where(total > 0, np.clip(centre - half, 0.0, 1.0), 0.0)
    high = np.where(total > 0, np.clip(centre + half, 0.0, 1.0), 1.0)
    return low, high
