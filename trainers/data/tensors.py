"""Decoded images as training tensors, with augmentation (torchvision v2)."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from edgetune.trainers.data.images import DecodedSet


class ImageTensors(Dataset):
    """Decoded uint8 images as CHW tensors, with optional training augmentation."""

    def __init__(self, data: DecodedSet, augment: bool = False, hflip: bool = False):
        self.pixels = torch.from_numpy(data.pixels).permute(0, 3, 1, 2)  # NCHW uint8 view
        self.labels = torch.from_numpy(data.labels)
        self.transform = _augmentation(self.pixels.shape[-1], hflip) if augment else None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = self.pixels[i]
        if self.transform is not None:
            x = self.transform(x)
        return x, self.labels[i]


def _augmentation(size: int, hflip: bool):
    from torchvision.transforms import v2

    ops = [v2.RandomResizedCrop(size, scale=(0.7, 1.0), ratio=(0.85, 1.15), antialias=True),
           v2.ColorJitter(brightness=0.2, contrast=0.2)]
    if hflip:
        ops.append(v2.RandomHorizontalFlip())
    return v2.Compose(ops)
