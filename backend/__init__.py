"""The real engine: a PyTorch model with a paged KV cache, driven step by step by the simulator's
own schedulers, and its OpenAI-compatible server. Imports simulator.scheduling, simulator.metrics,
simulator.spec and simulator.common only."""
