"""Training augmentation for whole batches, on the device that trains (GPU or CPU).

One ``grid_sample`` per batch does every image's random resized crop (and flip); brightness and
contrast are per-image scalars. Nothing runs per image in Python, so augmentation keeps up with a
GPU. Parameters come from a CPU generator (``RunContext.augment_generator``): the same seed gives
the same augmentation on any device, and its state is part of the resume state.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from edgetune.trainers.data.sampling import Share

_GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's contrast uses


class BatchAugment:
    """Random resized crop (area ``scale``, aspect ``ratio``), optional horizontal flip, brightness
    and contrast jitter, applied to float images in [0, 1] (N, 3, H, W); output the same size."""

    def __init__(self, generator: torch.Generator, hflip: bool = False, scale=(0.7, 1.0), ratio=(0.85, 1.15),
                 brightness: float = 0.2, contrast: float = 0.2):
        self.generator, self.hflip = generator, hflip
        self.scale, self.log_ratio = scale, (math.log(ratio[0]), math.log(ratio[1]))
        self.brightness, self.contrast = brightness, contrast
        self._gray: dict[torch.device, torch.Tensor] = {}

    def params(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(affine thetas (n, 2, 3), colour factors (n, 2)) for ``n`` images, drawn on the CPU."""
        u = torch.rand(n, 7, generator=self.generator)
        area = self.scale[0] + (self.scale[1] - self.scale[0]) * u[:, 0]
        ratio = torch.exp(self.log_ratio[0] + (self.log_ratio[1] - self.log_ratio[0]) * u[:, 1])
        w, h = (area * ratio).sqrt().clamp(max=1.0), (area / ratio).sqrt().clamp(max=1.0)
        flip = torch.where(u[:, 4] < 0.5, -1.0, 1.0) if self.hflip else torch.ones(n)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2] = w * flip, (1 - w) * (2 * u[:, 2] - 1)
        theta[:, 1, 1], theta[:, 1, 2] = h, (1 - h) * (2 * u[:, 3] - 1)
        colour = torch.stack([1 + self.brightness * (2 * u[:, 5] - 1), 1 + self.contrast * (2 * u[:, 6] - 1)], 1)
        return theta, colour

    def __call__(self, x: torch.Tensor, share: Share | None = None) -> torch.Tensor:
        """``x`` augmented. Under DDP (``share``) the parameters are drawn for the whole global batch
        and this process takes its share's rows: K processes augment exactly as one would."""
        if share is None:
            theta, colour = self.params(x.shape[0])
        else:
            theta, colour = (t[share.rows()] for t in self.params(share.total))
        if x.is_cuda:  # a copy from pinned memory does not wait for the GPU to drain (pageable would)
            theta, colour = theta.pin_memory(), colour.pin_memory()
        theta = theta.to(x.device, non_blocking=True)
        colour = colour.to(x.device, non_blocking=True).view(-1, 2, 1, 1, 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        x = (x * colour[:, 0]).clamp(0.0, 1.0)
        gray = self._gray.get(x.device)
        if gray is None:
            gray = self._gray[x.device] = torch.tensor(_GRAY, device=x.device).view(1, 3, 1, 1)
        mean = (x * gray).sum(1, keepdim=True).mean((2, 3), keepdim=True)
        return ((x - mean) * colour[:, 1] + mean).clamp(0.0, 1.0)
