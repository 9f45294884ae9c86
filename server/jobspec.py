"""Job requests (plain dicts, the API's field names) -> validated TrainConfig.

Shared by the service (validating CreateJob) and the worker process (building the run's config).
A request picks from fixed registries and enums, never a path or a class name: weights are
"catalog", "random" or a catalog entry name; the dataset is a server-side id.
"""

from __future__ import annotations

import logging

from edgetune.errors import FailedPrecondition, InvalidArgument, WeightsError
from edgetune.tasks import TASKS
from edgetune.trainers.config import TrainConfig, load_config
from edgetune.trainers.models.catalog import catalog
from edgetune.trainers.models.weights import resolve_weights

# API field -> config field. Errors name the API field the client sent.
_FIELDS = {
    "hyperparameters.epochs": "optim.epochs",
    "hyperparameters.learning_rate": "optim.lr",
    "hyperparameters.batch_size": "optim.batch_size",
    "hyperparameters.image_size": "data.image_size",
    "hyperparameters.optimizer": "optim.optimizer",
    "hyperparameters.weight_decay": "optim.weight_decay",
    "hyperparameters.label_smoothing": "optim.label_smoothing",
    "hyperparameters.early_stopping_patience": "optim.early_stopping_patience",
    "hyperparameters.augment": "data.augment",
    "hyperparameters.seed": "seed",
    "hyperparameters.max_length": "data.max_length",
    "base_model": "model.arch",
    "weights": "model.weights",
    "method": "method",
}
_API_NAME = {v: k for k, v in _FIELDS.items()}
log = logging.getLogger("edgetune.server")


def server_catalog(read=catalog, field: str = "weights"):
    """``read()`` of the model catalog; a broken operator catalog is the server's problem, not the
    caller's: FAILED_PRECONDITION naming ``field``, without the file's path (the log has it)."""
    try:
        return read()
    except WeightsError as e:
        log.error("the operator catalog is unusable: %s: %s", e.subject, e.message)
        raise FailedPrecondition(field, "this server's model catalog ($EDGETUNE_CATALOG) is broken; "
                                        "the operator must fix it (see the server log)") from None


def train_config(request: dict, data_path: str, columns: dict[str, str] | None = None) -> TrainConfig:
    """Validate a job request; InvalidArgument names the API field (e.g. hyperparameters.learning_rate).

    ``columns`` are the dataset's text columns (``TextFields`` names), as mapped at upload.
    """
    if request.get("task") not in TASKS:
        raise InvalidArgument("task", f"must be one of {', '.join(TASKS)}, got {request.get('task')!r}")
    weights = request.get("weights") or "catalog"
    if weights not in ("catalog", "random") and weights not in server_catalog():
        raise InvalidArgument("weights", f"{weights!r} is not 'catalog', 'random' or a catalog entry name")
    flat = {"base_model": request.get("base_model") or None, "weights": weights, "method": request.get("method")}
    for key, value in (request.get("hyperparameters") or {}).items():
        flat[f"hyperparameters.{key}"] = value
    overrides = {"data.path": data_path, "task": request["task"],
                 **{f"data.{key}_field": value for key, value in (columns or {}).items()}}
    for key, value in flat.items():
        if key not in _FIELDS:
            raise InvalidArgument(key, "unknown field")
        if value is not None:
            overrides[_FIELDS[key]] = value
    server_catalog()
    try:
        cfg = load_config(overrides=overrides)
        resolve_weights(cfg.model.arch, cfg.model.weights)
    except InvalidArgument as e:
        raise InvalidArgument(_API_NAME.get(e.subject, e.subject), e.message) from None
    except WeightsError as e:  # an operator's catalog entry is broken: say so without its server path
        log.error("catalog weights unusable: %s: %s", e.subject, e.message)
        raise FailedPrecondition("weights", "the catalog's weights for this model are unusable on this server "
                                            "(the operator must fix them; see the server log)") from None
    return cfg
