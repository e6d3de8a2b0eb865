"""Measuring: the engine's steps timed on a device (profile, step grids, peak bandwidth and
FLOP/s), the engine serving a workload in real time (replay), and any OpenAI-compatible server
under load (bench and its HTTP load generator). Imports simulator and backend."""
