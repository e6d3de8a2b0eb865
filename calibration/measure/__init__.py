"""Measuring: the engine's steps timed on a device (profile, step grids, peak bandwidth and
FLOP/s), the engine serving a workload in real time (replay), and any OpenAI-compatible server
under load (bench, its HTTP load generator, its prompts, and the reader of a server's own
settings and prefix-cache counters). Imports simulator and backend."""
