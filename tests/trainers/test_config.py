import pytest
import yaml

from edgetune.errors import InvalidArgument
from edgetune.tasks import IMAGE_CLASSIFICATION, TASKS
from edgetune.trainers.config import config_from_dict, load_config

METHOD_DEFAULTS = TASKS[IMAGE_CLASSIFICATION].method_defaults


@pytest.mark.parametrize("task,method", [(t, m) for t in TASKS for m in TASKS[t].methods])
def test_method_defaults_fill_unset_fields(task, method):
    cfg = load_config(overrides={"task": task, "method": method})
    defaults = TASKS[task].method_defaults[method]
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.epochs) == (defaults["lr"], defaults["weight_decay"],
                                                                       defaults["epochs"])
    assert cfg.optim.metric == TASKS[task].metric and cfg.model.arch == TASKS[task].default_arch


def test_yaml_then_overrides_take_precedence(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"method": "lora", "optim": {"lr": 0.5, "batch_size": 8},
                                    "model": {"arch": "vit_tiny_patch16_224"}, "data": {"image_size": 32}}))
    cfg = load_config(path, {"optim.lr": "0.01", "data.augment": "false", "optim.epochs": "2"})
    assert (cfg.method, cfg.optim.lr, cfg.optim.batch_size, cfg.optim.epochs) == ("lora", 0.01, 8, 2)
    assert cfg.data.augment is False
    assert cfg.optim.weight_decay == METHOD_DEFAULTS["lora"]["weight_decay"]


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(overrides={"optim.lr": "0.02", "data.path": "x", "model.weights": "random"})
    cfg.save(tmp_path / "config.yaml")
    assert config_from_dict(yaml.safe_load((tmp_path / "config.yaml").read_text())) == cfg


@pytest.mark.parametrize("overrides, field", [
    ({"optim.lr": "0"}, "optim.lr"),
    ({"optim.lr": "-1e-3"}, "optim.lr"),
    ({"optim.epochs": "0"}, "optim.epochs"),
    ({"optim.batch_size": "0"}, "optim.batch_size"),
    ({"optim.optimizer": "adam"}, "optim.optimizer"),
    ({"optim.epochs": "two"}, "optim.epochs"),
    ({"optim.grad_accum": "0"}, "optim.grad_accum"),
    ({"model.arch": "resnet9000"}, "model.arch"),
    ({"method": "prefix_tuning"}, "method"),
    ({"data.val_fraction": "1.5"}, "data.val_fraction"),
    ({"optim.nope": "1"}, "optim.nope"),
    ({"model.arch": "vit_tiny_patch16_224", "data.image_size": "40"}, "data.image_size"),
    ({"lora.r": "0"}, "lora.r"),
    ({"optim.momentum": "1.5"}, "optim.momentum"),
])
def test_bad_values_name_the_field(overrides, field):
    with pytest.raises(InvalidArgument) as e:
        load_config(overrides=overrides)
    assert e.value.subject == field
