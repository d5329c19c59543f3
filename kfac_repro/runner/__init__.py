"""Running experiments: the training loop, its metrics CSV, checkpoints and run directories."""
