"""Research tools with their own --help (python -m mmder.tools.X): fast ablations, the image probe."""
