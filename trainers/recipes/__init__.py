"""One recipe per task, each ``train_*(cfg, out_dir, progress, resume) -> RunResult``; ``train.RECIPES`` picks one."""
