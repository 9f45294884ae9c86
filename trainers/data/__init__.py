"""Datasets before training: reading and validating images and text rows, the split, and the tensors a loop consumes."""
