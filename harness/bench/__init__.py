"""Harness benchmarks that print figures: one cell without Ray (fit), start-up overhead, scheduling."""
