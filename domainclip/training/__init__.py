"""Training layer: the Lightning task (wrapping an AdaptedModel), losses, GradCache, strategies,
and the reliability callbacks (guard, preemption, resume, checkpoint I/O, sample log, capsule)."""
