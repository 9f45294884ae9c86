"""Models: the registries (plain data), building timm and transformers models, and resolving local base weights."""
