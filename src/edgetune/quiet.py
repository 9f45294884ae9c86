"""Third-party noise, handled in one place: every entry point (the CLI, ``serve``, job workers)
calls ``quiet_libraries`` first; ``edgetune --verbose`` shows everything again.

What is hidden, and why: transformers' load reports and advisories (our run reports say which
tensors are new), progress bars (tqdm, HF hub) that garble logs, deprecation chatter from
libraries about their own internals. Settings travel to worker processes through the environment.
"""

from __future__ import annotations

import logging
import os
import warnings

VERBOSE_ENV = "EDGETUNE_VERBOSE"
_QUIET_ENV = {"TRANSFORMERS_VERBOSITY": "error", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
              "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}


def quiet_libraries(verbose: bool = False) -> None:
    if verbose:
        os.environ[VERBOSE_ENV] = "1"
    if os.environ.get(VERBOSE_ENV) == "1":
        return
    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)
    warnings.filterwarnings("ignore", category=FutureWarning, message=".*is_gradient_checkpointing.*")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for name in ("torch.onnx", "onnxscript", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
