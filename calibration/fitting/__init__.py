"""Fitting measurements into step-time models: profiles and served steps (fit), `llmsim bench`
runs of any server (from_bench), and carrying a fit to other hardware (transfer)."""
