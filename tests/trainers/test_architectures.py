"""Parametrized over the registry: adding an architecture adds its tests."""

import pytest
import torch

from edgetune.trainers.models.image import create_model, head_name
from edgetune.trainers.models.registry import ARCHITECTURES
from edgetune.trainers.config import load_config
from edgetune.trainers.methods import apply_method, plain_model, trainable_parameters

SIZE = 32


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
@pytest.mark.parametrize("method", ["full", "linear_probe", "lora"])
def test_methods_train_the_right_parameters(arch, method):
    torch.manual_seed(0)
    cfg = load_config(overrides={"model.arch": arch, "method": method, "data.image_size": SIZE})
    model = create_model(arch, 4, SIZE)
    head = head_name(model)
    head_params = sum(p.numel() for p in model.get_submodule(head).parameters())
    total_before = sum(p.numel() for p in model.parameters())
    wrapped = apply_method(model, cfg)
    trainable, total = trainable_parameters(wrapped)
    if method == "full":
        assert trainable == total == total_before
    elif method == "linear_probe":
        assert trainable == head_params
    else:
        assert head_params < trainable < 0.2 * total_before

    x = torch.randn(2, 3, SIZE, SIZE)
    wrapped.train()
    loss = wrapped(x).logsumexp(-1).sum()
    loss.backward()
    grads = [n for n, p in wrapped.named_parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(p.grad is None for p in wrapped.parameters() if not p.requires_grad)
    assert any(head in n for n in grads)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_lora_merge_gives_a_plain_model_with_the_same_outputs(arch):
    torch.manual_seed(0)
    cfg = load_config(overrides={"model.arch": arch, "method": "lora", "data.image_size": SIZE})
    wrapped = apply_method(create_model(arch, 3, SIZE), cfg)
    # Make the adapters non-zero, as after training (peft initialises B to zero).
    with torch.no_grad():
        for n, p in wrapped.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    wrapped.eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = wrapped(x)
        merged = plain_model(wrapped).eval()
        got = merged(x)
    assert not any("lora" in k for k in merged.state_dict())
    assert set(merged.state_dict()) == set(create_model(arch, 3, SIZE).state_dict())
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
