"""Checkpoint files (weights, JSON, arrays, training state), each written atomically
(``edgetune.atomic``: a crash leaves the previous file or the new one, never a torn file)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from edgetune.atomic import atomic_text, atomic_write
from edgetune.errors import WeightsError

# What every saved training state holds (``fit._save_state``); a resume reads each.
STATE_KEYS = ("model", "optimizer", "scheduler", "loader_rng", "epoch", "history", "best_metric", "best_epoch",
              "stale")


def save_json(path: str | Path, obj) -> None:
    atomic_text(path, json.dumps(obj, indent=2))


def save_weights(path: str | Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    tensors, seen = {}, set()
    for k, v in state_dict.items():
        v = v.detach().to("cpu").contiguous()
        # safetensors refuses aliased tensors (tied embeddings): store each alias as its own copy.
        tensors[k] = v.clone() if v.data_ptr() in seen else v
        seen.add(v.data_ptr())
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def save_numpy(path: str | Path, arrays: dict, metadata: dict[str, str] | None = None) -> None:
    from safetensors.numpy import save_file as save_numpy_file

    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    atomic_write(path, lambda tmp: save_numpy_file(arrays, tmp, metadata=metadata))


def save_training_state(path: str | Path, state: dict) -> None:
    """Everything a resume needs (model, optimizer, scheduler, RNG, counters); tensors and plain
    Python values only, so it loads with ``torch.load(weights_only=True)``."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_training_state(path: str | Path) -> dict:
    """The state ``save_training_state`` wrote, loaded weights-only: a file holding any other pickled
    object (code to run, say) is refused with WeightsError naming it, and nothing in it is built."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise WeightsError(str(path), "refused: not a weights-only resume state (tensors and plain values are "
                                      "loaded; other pickled objects never are)") from None
    except (OSError, EOFError, RuntimeError, ValueError) as e:
        raise WeightsError(str(path), f"unreadable resume state: {one_line(e)}") from None
    missing = [k for k in STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise WeightsError(str(path), f"not a resume state: it lacks {', '.join(missing)}")
    return state


def one_line(error: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, cut to ``limit`` characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."
