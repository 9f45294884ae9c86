"""Training: architectures, local base weights, datasets, configs and the image recipe."""
