"""Measurements and what they become: measuring the engine and any OpenAI-compatible server
(measure/), fitting step-time models (fitting/), checking the simulator against reality
(validation/), and the shipped calibration files (profiles/). Imports simulator and backend."""
