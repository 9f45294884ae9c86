"""The order examples are trained in: shuffled batches that a resume can re-enter mid-epoch.

``EpochBatches`` draws each epoch's permutation from its generator when the epoch starts (as
``RandomSampler`` does, so the order is the same), which makes an epoch reproducible from the
generator's state at its start: save that state and the number of batches done, and a resumed run
trains the same remaining batches in the same order. Under DDP every process draws the same
permutation and takes its contiguous share of every global batch (``Share``), so K processes train
on the same global batches as one, but for the last: a last batch too small to split (fewer than
``MIN_SHARE`` items per process; one item for a single process) is folded into the batch before
it, since BatchNorm cannot train on one value per channel.

With ``lengths`` (text), batches are length-grouped as Hugging Face's ``group_by_length`` does: the
epoch's permutation is cut into runs of up to ``MEGA_BATCHES`` batches (a quarter of the epoch's
batches when that is fewer), each sorted longest first, so a batch pads to rows of similar length
while the epoch's order stays random.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Sampler

MEGA_BATCHES = 50
MIN_SHARE = 2  # items per process in a last batch of its own (BatchNorm needs two values per channel)


@dataclass(frozen=True)
class Share:
    """A process's part of global batch: items ``[offset, offset + size)`` of ``total``.

    ``size == 0`` happens only when the whole dataset has fewer items than there are processes: that
    process still trains on one item of the batch (every process must join each gradient
    all-reduce), weighted zero.
    """

    offset: int
    size: int
    total: int

    def rows(self) -> slice:
        """Which items of the global batch this process trains on (the first one when ``size == 0``)."""
        return slice(self.offset, self.offset + self.size) if self.size else slice(0, 1)


def share_of(total: int, rank: int, world: int) -> Share:
    """Process ``rank``'s share of a global batch of ``total`` (sizes differ by at most one; lower
    ranks take the extra items, so rank 0 is never empty)."""
    base, extra = divmod(total, world)
    return Share(rank * base + min(rank, extra), base + (rank < extra), total)


class EpochBatches(Sampler[list[int]]):
    """Batches of indices into ``n`` examples.

    Args:
        generator: shuffles each epoch when given; ``None`` keeps the order (evaluation).
        rank, world: this process's share of every global batch of ``batch_size``.
        lengths: each example's length: group shuffled batches by length (see above).
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator | None = None, rank: int = 0,
                 world: int = 1, lengths: Sequence[int] | None = None):
        self.n, self.batch_size, self.generator, self.rank, self.world = n, batch_size, generator, rank, world
        self.lengths = lengths
        self.start = 0  # batches of the next epoch to skip (set by a mid-epoch resume; reset on use)

    def __len__(self) -> int:
        full, tail = divmod(self.n, self.batch_size)
        return full + 1 if tail and (full == 0 or tail >= MIN_SHARE * self.world) else full

    def bounds(self, b: int) -> tuple[int, int]:
        """Global batch ``b``'s positions in the epoch's order (the last one takes a folded tail)."""
        return b * self.batch_size, self.n if b == len(self) - 1 else (b + 1) * self.batch_size

    def share(self, b: int) -> Share:
        """This process's share of global batch ``b``."""
        start, stop = self.bounds(b)
        return share_of(stop - start, self.rank, self.world)

    def order(self) -> list[int]:
        """The next epoch's order of examples (a shuffle draws from the generator)."""
        if self.generator is None:
            return list(range(self.n))
        order = torch.randperm(self.n, generator=self.generator).tolist()
        if self.lengths is not None:
            mega = self.batch_size * max(1, min(MEGA_BATCHES, len(self) // 4))
            order = [i for s in range(0, self.n, mega)
                     for i in sorted(order[s:s + mega], key=lambda i: -self.lengths[i])]
        return order

    def __iter__(self):
        order = self.order()
        start, self.start = self.start, 0
        for b in range(start, len(self)):
            start, stop = self.bounds(b)
            yield order[start:stop][self.share(b).rows()]
