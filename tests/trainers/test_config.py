import pytest
import yaml

from edgetune.errors import InvalidArgument
from edgetune.trainers.config import METHOD_DEFAULTS, config_from_dict, load_config


@pytest.mark.parametrize("method", sorted(METHOD_DEFAULTS))
def test_method_defaults_fill_unset_fields(method):
    cfg = load_config(overrides={"method": method})
    assert cfg.optim.lr == METHOD_DEFAULTS[method]["lr"]
    assert cfg.optim.epochs == METHOD_DEFAULTS[method]["epochs"]


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
