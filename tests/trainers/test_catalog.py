import pytest
import torch
import yaml
from safetensors.torch import save_file

from edgetune.errors import InvalidArgument, WeightsError
from edgetune.trainers.models.image import create_model
from edgetune.trainers.models.catalog import BUILTIN, list_base_models
from edgetune.trainers.models.image import load_base_weights
from edgetune.trainers.models.weights import resolve_weights


def test_builtin_efficientnet_lite0_weights_map_onto_timm_with_every_shape_verified():
    source = resolve_weights("efficientnet_lite0", "catalog")
    assert source.kind == "catalog" and source.name == "efficientnet_lite0.imagenet"
    raw = torch.load(source.path, weights_only=True)
    model = create_model("efficientnet_lite0", 10, 224, source.create_kwargs)
    info = load_base_weights(model, source)
    assert info["loaded_tensors"] == len(raw) - 2  # all but the 1000-class head
    # The lukemelas tensors land in order on timm's names: spot-check the ends.
    sd = model.state_dict()
    torch.testing.assert_close(sd["conv_stem.weight"], raw["_conv_stem.weight"])
    torch.testing.assert_close(sd["bn2.running_var"], raw["_bn1.running_var"])
    assert float(sd["classifier.weight"].abs().sum()) == 0.0  # fresh, zero head
    assert model.bn1.eps == pytest.approx(1e-3)


def test_operator_safetensors_file_round_trips(tmp_path):
    torch.manual_seed(1)
    src = create_model("resnet18", 1000, 32)
    save_file(src.state_dict(), tmp_path / "r18.safetensors")
    dst = create_model("resnet18", 5, 32)
    info = load_base_weights(dst, resolve_weights("resnet18", str(tmp_path / "r18.safetensors")))
    assert info["loaded_tensors"] == len(src.state_dict()) - 2
    torch.testing.assert_close(dst.state_dict()["layer4.1.conv2.weight"], src.state_dict()["layer4.1.conv2.weight"])


def test_pth_is_read_weights_only(tmp_path):
    import argparse

    # Arbitrary pickled objects are refused by weights_only loading; a plain pickle would build them.
    torch.save({"conv1.weight": torch.zeros(1), "evil": argparse.Namespace(x=1)}, tmp_path / "bad.pth")
    with pytest.raises(WeightsError) as e:
        load_base_weights(create_model("resnet18", 2, 32), resolve_weights("resnet18", str(tmp_path / "bad.pth")))
    assert e.value.subject.endswith("bad.pth")


def test_shape_mismatch_names_file_and_tensor(tmp_path):
    save_file(create_model("resnet50", 10, 32).state_dict(), tmp_path / "r50.safetensors")
    with pytest.raises(WeightsError) as e:
        load_base_weights(create_model("resnet18", 2, 32), resolve_weights("resnet18", str(tmp_path / "r50.safetensors")))
    assert "r50.safetensors" in e.value.subject and "shape" in e.value.message


def test_vit_position_embeddings_are_resampled_to_the_training_size(tmp_path):
    save_file(create_model("vit_tiny_patch16_224", 1000, 224).state_dict(), tmp_path / "vit.safetensors")
    model = create_model("vit_tiny_patch16_224", 3, 64)
    info = load_base_weights(model, resolve_weights("vit_tiny_patch16_224", str(tmp_path / "vit.safetensors")))
    assert model.pos_embed.shape[1] == 1 + (64 // 16) ** 2 and info["loaded_tensors"] > 100


def test_missing_catalog_entry_and_files_are_clear():
    with pytest.raises(InvalidArgument) as e:
        resolve_weights("resnet18", "catalog")
    assert e.value.subject == "model.weights"
    with pytest.raises(WeightsError):
        resolve_weights("resnet18", "/nonexistent/weights.safetensors")
    assert resolve_weights("resnet18", "random").describe().startswith("random init")


def test_operator_catalog_entries(tmp_path, monkeypatch):
    save_file(create_model("mobilenetv3_large_100", 1000, 32).state_dict(), tmp_path / "mnv3.safetensors")
    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump(
        {"models": {"site.mnv3": {"arch": "mobilenetv3_large_100", "path": str(tmp_path / "mnv3.safetensors")}}}))
    monkeypatch.setenv("EDGETUNE_CATALOG", str(tmp_path / "catalog.yaml"))
    rows = {r["arch"]: r for r in list_base_models()}
    assert rows["mobilenetv3_large_100"]["weights"] == [
        {"name": "site.mnv3", "available": True, "description": ""}]
    assert rows["efficientnet_lite0"]["weights"][0]["name"] in BUILTIN
    assert resolve_weights("mobilenetv3_large_100", "catalog").name == "site.mnv3"
    with pytest.raises(InvalidArgument):
        resolve_weights("resnet18", "site.mnv3")
