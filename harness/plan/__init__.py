"""Planning a sweep without Ray, MLflow or torch: cells and keys, provenance, disk checks, one SweepPlan."""
