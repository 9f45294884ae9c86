"""The front door of training: ``train(config, out_dir)`` picks the task's recipe.

The CLI, the server's worker processes and the tests call this one function.
"""

from __future__ import annotations

from pathlib import Path

from edgetune.errors import InvalidArgument
from edgetune.progress import ProgressSink, silent
from edgetune.tasks import IMAGE_CLASSIFICATION, TEXT_CLASSIFICATION, TEXT_GENERATION
from edgetune.trainers import distributed
from edgetune.trainers.config import TrainConfig, read_saved_config
from edgetune.trainers.recipes.image_classification import train_image
from edgetune.trainers.recipes.instruction import train_instruct
from edgetune.trainers.recipes.text_classification import train_text
from edgetune.trainers.run import RunFiles, RunResult

RECIPES = {IMAGE_CLASSIFICATION: train_image, TEXT_CLASSIFICATION: train_text, TEXT_GENERATION: train_instruct}


def train(cfg: TrainConfig, out_dir: str | Path, progress: ProgressSink = silent, resume: bool = False
          ) -> RunResult:
    """Fine-tune per ``cfg.task`` and write the run directory (see ``run.py``). Under a launcher
    (torchrun: ``RANK``, ``WORLD_SIZE`` set) this process is one of the job's DDP processes."""
    try:
        return RECIPES[cfg.task](cfg, out_dir, progress, resume)
    finally:
        distributed.stop()


def read_run_config(run_dir: str | Path) -> TrainConfig:
    """The resolved config saved in a run, for ``--resume``."""
    files = RunFiles(Path(run_dir))
    if not files.config.is_file() or not files.state.is_file():
        raise InvalidArgument("resume", f"{run_dir} has no config.yaml and state/last.pt to resume from")
    return read_saved_config(files.config)
