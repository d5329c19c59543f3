"""Judging the paper's claims from runs and cost sittings: the paired verdict rule, targets along the curves, and
each claim's computation. No TensorFlow, no plotting."""
