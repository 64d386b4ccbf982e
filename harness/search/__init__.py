"""The per-setting Optuna search: its shared vocabulary (job), its driver and its Train trials."""
