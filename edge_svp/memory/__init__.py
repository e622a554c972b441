"""Memory: sizes (size.py), measurement (meter.py), probing a block's training step
(probe.py), the per-block plan (plan.py, plain arithmetic) and the activation cache."""
