"""How random a pass's order really is, against a uniform random permutation of the store.

A true permutation (imgbench's shuffled order, a RandomSampler) and a buffered shuffle (shards
shuffled, then samples shuffled inside a buffer, as WebDataset does) both look "shuffled"; they
differ in how often neighbours in the order come from the same part of the store, which is what
makes a buffered shuffle's batches correlated. Two measures on the ids in the order delivered:

- `same_block`: the fraction of consecutive pairs whose ids lie in the same block of
  `block` ids (a tar shard of that many images, say), beside `same_block_uniform`, what a
  uniform permutation gives: sum over blocks of s(s-1) / (n(n-1)), about 1/blocks.
- `distance_ratio`: the mean |id[t+1] - id[t]| divided by a uniform permutation's, (n+1)/3
  (1: as spread as a true shuffle; near 0: neighbours are near neighbours).
"""
from __future__ import annotations

import numpy as np


def measures(order, n: int, block: int) -> dict:
    """The measures of the ids `order` (a pass, or the part of it that was counted) in a store of
    `n` ids 0..n-1, with blocks of `block` ids."""
    order = np.asarray(order, np.int64)
    if n < 2 or block < 1:
        raise ValueError(f"shuffle measures need a store of at least 2 ids and blocks of at least 1, "
                         f"got n={n}, block={block}")
    sizes = np.full(n // block, block, np.float64)
    if n % block:
        sizes = np.append(sizes, n % block)
    uniform = float((sizes * (sizes - 1)).sum() / (n * (n - 1.0)))
    if len(order) < 2:
        return {"shuffle_block": block, "same_block": None, "same_block_uniform": uniform, "distance_ratio": None}
    same = float(np.mean(order[1:] // block == order[:-1] // block))
    ratio = float(np.abs(np.diff(order)).mean() / ((n + 1) / 3))
    return {"shuffle_block": block, "same_block": same, "same_block_uniform": uniform, "distance_ratio": ratio}
