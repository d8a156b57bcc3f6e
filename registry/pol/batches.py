"""A batch index source with its own generator.

The recorder re-seeds torch's global generators before every step (`registry.pol.rng`), so whatever a loop
draws from them between steps (e.g. `DataLoader(shuffle=True)` without a `generator=`) becomes a function of
the step number: still deterministic and different per epoch, but no longer of the user's own seed. Shuffling
with a private numpy Generator keeps the batch order a function of the run's seed alone.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def epoch_batches(num_examples: int, batch_size: int, epochs: int, seed: int) -> Iterator[tuple[int, np.ndarray]]:
    """(epoch, int64 indices) for each step: a fresh PCG64 permutation per epoch, last partial batch dropped."""
    if batch_size < 1 or batch_size > num_examples:
        raise ValueError(f"batch_size must be in [1, {num_examples}]")
    rng = np.random.Generator(np.random.PCG64(seed))
    per_epoch = num_examples // batch_size
    for epoch in range(epochs):
        perm = rng.permutation(num_examples).astype(np.int64)
        for b in range(per_epoch):
            yield epoch, perm[b * batch_size:(b + 1) * batch_size]
