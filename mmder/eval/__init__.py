"""Metrics, paired statistics, published reference results and the classical baselines."""
