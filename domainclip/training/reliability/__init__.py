"""Reliability: atomic checkpoints loaded without unpickling code, exact resume (RNG states and
data position), preemption handling, the non-finite loss guard and the run capsule."""
