"""The per-token histogram on a CPU, in one compiled pass over a layer's activations.

As tensor operations (bit shift, table lookup, offset, bincount) the histogram was the CPU harvest's
largest cost after the model itself, each step a full pass over memory. This loop reads each activation
once. GPUs keep the tensor version in `selection.Stats`.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(parallel=True, nogil=True, cache=True)
def _count(bits, bin_of_prefix, counts, n_chunks):  # pragma: no cover - compiled
    batch, window, d_mlp = bits.shape
    chunk = (d_mlp + n_chunks - 1) // n_chunks
    for c in numba.prange(n_chunks):
        first, last = c * chunk, min(d_mlp, (c + 1) * chunk)
        for b in range(batch):
            for t in range(1, window):
                for n in range(first, last):
                    value_bits = bits[b, t, n]
                    prefix = value_bits >> 16
                    if prefix == 0 and value_bits != 0:
                        prefix = np.uint32(1)  # a tiny positive denormal: not +0.0's bin
                    counts[bin_of_prefix[prefix], n] += 1


def histogram_counts(acts: np.ndarray, bin_of_prefix: np.ndarray, bins: int) -> np.ndarray:
    """[d_mlp, bins] int64 counts of every non-BOS activation of `acts` [batch, window, d_mlp] float32
    (BOS at position 0); a value's bin is `bin_of_prefix[its top 16 bits]`."""
    bits = np.ascontiguousarray(acts, dtype=np.float32).view(np.uint32)
    counts = np.zeros((bins, bits.shape[2]), dtype=np.int32)  # bin-major: neighbouring neurons share cache lines
    _count(bits, bin_of_prefix, counts, min(numba.get_num_threads(), bits.shape[2]))
    return counts.T.astype(np.int64)
