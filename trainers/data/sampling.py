"""The order examples are trained in: shuffled batches that a resume can re-enter mid-epoch.

``EpochBatches`` draws each epoch's permutation from its generator when the epoch starts (as
``RandomSampler`` does, so the order is the same), which makes an epoch reproducible from the
generator's state at its start: save that state and the number of batches done, and a resumed run
trains the same remaining batches in the same order. Under DDP each process takes its contiguous
part of every global batch, so K processes see the same global batches as one.
"""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


class EpochBatches(Sampler[list[int]]):
    """Batches of indices into ``n`` examples.

    Args:
        generator: shuffles each epoch when given; ``None`` keeps the order (evaluation).
        rank, world: this process's part of every global batch of ``batch_size``.
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator | None = None, rank: int = 0,
                 world: int = 1):
        self.n, self.batch_size, self.generator, self.rank, self.world = n, batch_size, generator, rank, world
        self.start = 0  # batches of the next epoch to skip (set by a mid-epoch resume; reset on use)

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator).tolist() if self.generator is not None \
            else list(range(self.n))
        start, self.start = self.start, 0
        for b in range(start, len(self)):
            yield local_part(order[b * self.batch_size:(b + 1) * self.batch_size], self.rank, self.world)


def local_part(batch: list, rank: int, world: int) -> list:
    """Process ``rank``'s contiguous share of a global batch (sizes differ by at most one)."""
    n = len(batch)
    return batch[rank * n // world:(rank + 1) * n // world]
