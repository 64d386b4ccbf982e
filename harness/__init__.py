"""Orchestration: the experiment file, the sweep plan, Ray Tune/Train, MLflow tracking, results, CLI."""
