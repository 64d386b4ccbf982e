"""The sweep driver: cell owners, starting or joining Ray, the Tune grid, signals, the outcome."""
