"""The train/validation split shared by every task: stratified by label, identical content kept together."""

from __future__ import annotations

import random
from collections import Counter, defaultdict


def stratified_split(labels: list[str], digests: list[str], fraction: float, seed: int
                     ) -> tuple[list[int], list[int]]:
    """Indices of (train, val). Identical items (same digest) stay on one side whatever their labels,
    so duplicates cannot leak into val; a group of identical items is stratified under its most
    common label. Every label with more than one group keeps at least one in each split."""
    by_digest: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(digests):
        by_digest[h].append(i)
    groups: dict[str, list[list[int]]] = defaultdict(list)
    for unit in by_digest.values():
        label = Counter(labels[i] for i in unit).most_common(1)[0][0]
        groups[label].append(unit)
    rng = random.Random(seed)
    train, val = [], []
    for label in sorted(groups):
        units = groups[label]
        rng.shuffle(units)
        n_val = int(round(len(units) * fraction)) if len(units) > 1 else 0
        n_val = min(max(n_val, 1 if len(units) > 1 else 0), len(units) - 1)
        for j, unit in enumerate(units):
            (val if j < n_val else train).extend(unit)
    return sorted(train), sorted(val)
