"""What runs inside Ray actors: the Tune trial, the Train worker loop, baselines, resume, placement."""
