"""Benchmarks without Ray: a training step (and a suite of them), data preparation and loading."""
