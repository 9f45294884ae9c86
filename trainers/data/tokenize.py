"""Text rows as token ids for training: encoding with truncation, and right-padded batches."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from edgetune.trainers.data.sampling import EpochBatches
from edgetune.trainers.distributed import Dist

ENCODE_CHUNK = 2048  # rows per call to the (batched, Rust) tokenizer


class TokenizedRows(Dataset):
    """Token id lists and their targets (class indices, or label ids for the response tokens)."""

    def __init__(self, ids: list[list[int]], targets: list):
        self.ids, self.targets = ids, targets

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        return self.ids[i], self.targets[i]


def pad_collate(pad_id: int):
    """Right-pad a batch of (ids, label) to its longest row: input_ids, attention_mask, labels."""

    def collate(batch):
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, (ids, _) in enumerate(batch):
            input_ids[r, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[r, :len(ids)] = 1
        return input_ids, mask, torch.tensor([y for _, y in batch], dtype=torch.long)

    return collate


def encode(tokenizer, texts: list[str], max_length: int) -> tuple[list[list[int]], list[int]]:
    """Token ids truncated to ``max_length`` (special tokens kept), and the untruncated lengths.
    Encoded in chunks: only the truncated ids are kept."""
    cut, lengths = [], []
    for s in range(0, len(texts), ENCODE_CHUNK):
        chunk = texts[s:s + ENCODE_CHUNK]
        lengths += [len(x) for x in tokenizer(chunk, add_special_tokens=True, truncation=False)["input_ids"]]
        cut += tokenizer(chunk, add_special_tokens=True, truncation=True, max_length=max_length)["input_ids"]
    return cut, lengths


def row_loader(rows: TokenizedRows, batch_size: int, collate, generator: torch.Generator | None = None,
               dist: Dist | None = None, group_by_length: bool = False) -> DataLoader:
    """Batches of ``rows`` in ``EpochBatches`` order: shuffled by ``generator`` when given,
    length-grouped with ``group_by_length``, this process's share of each under DDP."""
    dist = dist or Dist()
    lengths = [len(ids) for ids in rows.ids] if group_by_length else None
    batches = EpochBatches(len(rows), batch_size, generator, dist.rank, dist.world, lengths)
    return DataLoader(rows, batch_sampler=batches, collate_fn=collate, generator=torch.Generator().manual_seed(0))
