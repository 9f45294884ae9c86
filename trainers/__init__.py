"""Training: data (``data/``), models and local weights (``models/``), methods (``methods/``), one recipe
per task (``recipes/``), and the loop they share (``fit.py``). ``train.train(cfg, out_dir)`` is the door."""
