"""The per-worker training loop: DeepSpeed engine, optimiser, recipes, augmentation, MAE pre-training."""
