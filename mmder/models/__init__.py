"""The VideoMAE encoder + head, the MAE pre-trainer, and the converters of foreign checkpoint layouts."""
