"""Simulator against reality: the same workload on the engine (or a server) and in the
simulator, the error table, and the exact schedule check with the engine's own step times."""
