"""Memory: sizes (size.py), measurement (meter.py), probing a block's training step
(probe.py), the per-block planner (planner.py, plain arithmetic) and the activation cache."""
