"""Image batches for training: read from an ``ImageSet`` per batch, in DataLoader workers or not.

A batch is one ``ImageSet.read`` (a ``pread`` per image from the decoded cache, or a decode per
file), returned as an NCHW uint8 view of NHWC memory (channels_last, what CUDA convolutions want).
Scaling, augmentation (``augment.BatchAugment``) and normalization happen on the training device.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from edgetune.trainers.data.images import ImageSet, cpu_cores
from edgetune.trainers.data.sampling import EpochBatches

MAX_WORKERS = 16


class ImageBatches(Dataset):
    """Whole batches from an ``ImageSet``: ``__getitems__`` reads them in one call."""

    def __init__(self, images: ImageSet):
        self.images = images
        self.labels = torch.from_numpy(images.labels)

    def __len__(self) -> int:
        return len(self.images)

    def __getitems__(self, indices: list[int]):
        s = self.images.size
        pixels = torch.empty((len(indices), s, s, 3), dtype=torch.uint8)
        if get_worker_info() is not None:  # read straight into shared memory: no copy on the way out
            pixels.share_memory_()
        self.images.read(indices, pixels.numpy())
        return pixels.permute(0, 3, 1, 2), self.labels[indices]

    def __getitem__(self, i: int):
        x, y = self.__getitems__([i])
        return x[0], y[0]


def _as_is(batch):
    return batch


def loader_workers(images: ImageSet, cuda: bool, requested: int | None = None, processes: int = 1) -> int:
    """Worker processes for a loader: as asked, else from the cores. Reading the decoded cache on
    a CPU run needs none (it costs less than sending batches between processes); decoding files,
    or feeding a GPU, takes every core but the training processes' (``processes`` share the node)."""
    if requested is not None:
        return requested
    if images.pixels_file is not None and not cuda:
        return 0
    return max(1, min(MAX_WORKERS, cpu_cores() // processes - 1))


def image_loader(images: ImageSet, batches: EpochBatches, workers: int, pin_memory: bool) -> DataLoader:
    """A loader over ``batches`` (its own generator seeds the workers, so the global RNG is untouched);
    workers persist across epochs and keep four batches each in flight."""
    return DataLoader(ImageBatches(images), batch_sampler=batches, collate_fn=_as_is, num_workers=workers,
                      pin_memory=pin_memory, persistent_workers=workers > 0,
                      prefetch_factor=4 if workers else None, generator=torch.Generator().manual_seed(0))
