"""The model registries as plain data: which timm architectures and transformers families edgetune
fine-tunes and exports, and where each method attaches. Light (no torch, timm or transformers),
so configs, the CLI and the service validate names without loading a framework.

Adding an architecture is one entry here: tests are parametrized over both registries.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgetune.errors import InvalidArgument
from edgetune.tasks import TEXT_CLASSIFICATION, TEXT_GENERATION

_VIT_LORA = r".*blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2))"
_RESNET_LORA = r".*layer\d\.\d+\.conv\d"
# Pointwise (1x1, groups=1) convolutions of the inverted-residual blocks; depthwise convs are skipped.
_MBCONV_LORA = r".*blocks\.\d+\.\d+\.conv_(pw|pwl)"


@dataclass(frozen=True)
class ArchSpec:
    """One fine-tunable image architecture.

    Attributes:
        timm_name: name passed to ``timm.create_model``.
        family: "cnn" or "vit"; ViTs are built for the training image size.
        lora_targets: regex over module names that LoRA adapts (peft ``target_modules``).
        patch_size: ViT patch size; image sizes must be a multiple of it.
        create_kwargs: extra ``timm.create_model`` keyword arguments, always applied.
    """

    timm_name: str
    family: str
    lora_targets: str
    patch_size: int = 1
    create_kwargs: dict = field(default_factory=dict)


ARCHITECTURES: dict[str, ArchSpec] = {
    "resnet18": ArchSpec("resnet18", "cnn", _RESNET_LORA),
    "resnet34": ArchSpec("resnet34", "cnn", _RESNET_LORA),
    "resnet50": ArchSpec("resnet50", "cnn", _RESNET_LORA),
    "vit_tiny_patch16_224": ArchSpec("vit_tiny_patch16_224", "vit", _VIT_LORA, patch_size=16),
    "vit_small_patch16_224": ArchSpec("vit_small_patch16_224", "vit", _VIT_LORA, patch_size=16),
    "vit_base_patch16_224": ArchSpec("vit_base_patch16_224", "vit", _VIT_LORA, patch_size=16),
    "efficientnet_lite0": ArchSpec("efficientnet_lite0", "cnn", _MBCONV_LORA),
    "mobilenetv3_large_100": ArchSpec("mobilenetv3_large_100", "cnn", _MBCONV_LORA),
}


def get_arch(name: str) -> ArchSpec:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise InvalidArgument(
            "model.arch", f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}"
        ) from None


def check_image_size(arch: str, image_size: int) -> None:
    spec = get_arch(arch)
    if image_size < 16 or image_size % spec.patch_size:
        raise InvalidArgument(
            "data.image_size",
            f"{image_size} does not fit {arch} (at least 16 and a multiple of {spec.patch_size})",
        )


@dataclass(frozen=True)
class TextArchSpec:
    """One family of text models.

    Attributes:
        model_type: the transformers ``model_type`` (config.json) this family covers.
        tasks: which text tasks it serves (encoders classify, decoders generate).
        lora_targets: module-name suffixes LoRA adapts (peft ``target_modules``).
        ia3_targets / ia3_feedforward: IA3 scaled modules, and which of them are feed-forward.
        head: the classification head modules that train with every method (encoders); names
            match module-name suffixes, as peft's ``modules_to_save`` does.
        tokenizer: "wordpiece" or "bpe", for the tiny random-init tokenizer.
        tiny: the tiny random-init config (tests), vocab size set by the trained tokenizer.
    """

    model_type: str
    tasks: tuple[str, ...]
    lora_targets: tuple[str, ...]
    ia3_targets: tuple[str, ...]
    ia3_feedforward: tuple[str, ...]
    tokenizer: str
    head: tuple[str, ...] = ("classifier",)
    tiny: dict = field(default_factory=dict)


_ENC_TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
             "max_position_embeddings": 256}
_DEC_TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "intermediate_size": 64, "max_position_embeddings": 512, "tie_word_embeddings": False}

TEXT_ARCHITECTURES: dict[str, TextArchSpec] = {
    # BERT covers MiniLM (all-MiniLM-L6-v2 is a BertModel). Its pooler trains with the classifier:
    # sentence-embedding checkpoints (mean pooling) never trained it, and on SMS spam a frozen
    # pooler cost LoRA about 1.2 points of macro-F1 (0.968 vs 0.980 after 2 epochs).
    "bert": TextArchSpec("bert", (TEXT_CLASSIFICATION,), ("query", "value"),
                         ("key", "value", "output.dense"), ("output.dense",), "wordpiece",
                         head=("pooler.dense", "classifier"), tiny=_ENC_TINY),
    "distilbert": TextArchSpec("distilbert", (TEXT_CLASSIFICATION,), ("q_lin", "v_lin"), ("k_lin", "v_lin", "lin2"),
                               ("lin2",), "wordpiece", head=("pre_classifier", "classifier"),
                               tiny={"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64,
                                     "max_position_embeddings": 256}),
    "roberta": TextArchSpec("roberta", (TEXT_CLASSIFICATION,), ("query", "value"),
                            ("key", "value", "output.dense"), ("output.dense",), "bpe",
                            tiny={**_ENC_TINY, "max_position_embeddings": 258}),
    "gpt2": TextArchSpec("gpt2", (TEXT_GENERATION,), ("c_attn",), ("c_attn", "mlp.c_proj"), ("mlp.c_proj",), "bpe",
                         tiny={"n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 512}),
    "llama": TextArchSpec("llama", (TEXT_GENERATION,), ("q_proj", "v_proj"), ("k_proj", "v_proj", "down_proj"),
                          ("down_proj",), "bpe", tiny=_DEC_TINY),
    "qwen2": TextArchSpec("qwen2", (TEXT_GENERATION,), ("q_proj", "v_proj"), ("k_proj", "v_proj", "down_proj"),
                          ("down_proj",), "bpe", tiny=_DEC_TINY),
}


def get_text_arch(name: str, task: str) -> TextArchSpec:
    spec = TEXT_ARCHITECTURES.get(name)
    if spec is None:
        raise InvalidArgument("model.arch", f"unknown text architecture {name!r}; choose one of "
                                            f"{', '.join(TEXT_ARCHITECTURES)}")
    if task not in spec.tasks:
        ok = [n for n, s in TEXT_ARCHITECTURES.items() if task in s.tasks]
        raise InvalidArgument("model.arch", f"{name} does not serve {task}; use one of {', '.join(ok)}")
    return spec


