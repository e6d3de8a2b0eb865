"""Counting where a run's step times came from, for any execution model."""

from __future__ import annotations

from collections import Counter

from simulator.execution.kernels.interpolate import LABELS


def step_sources(model, new_tokens, cached_tokens, num_steps: int = 1) -> Counter:
    """Provenance labels of `num_steps` steps starting with this one (decode runs add a cached
    token per row per step). Models without kernel tables: a roofline's steps are "roofline",
    a fitted model's "measured-range" or "extrapolated" as it says."""
    own = getattr(model, "step_sources", None)
    if own is not None:
        return own(new_tokens, cached_tokens, num_steps)
    if model.provenance != "measured":
        return Counter({"roofline": num_steps})
    label = "extrapolated" if model.is_extrapolated(new_tokens, cached_tokens) else "measured-range"
    return Counter({label: num_steps})


def format_step_sources(info: dict) -> str | None:
    """'step times: N measured-range, M interpolated, K extrapolated, R roofline (source)'."""
    counts = info.get("step_sources")
    if not counts:
        return None
    execution = info.get("execution", {})
    where = execution.get("kernel_tables") or execution.get("calibration") or execution.get("provenance", "")
    parts = ", ".join(f"{counts.get(label, 0):,} {label}" for label in LABELS)
    line = f"step times: {parts} ({where})"
    notice = execution.get("notice")
    return f"{line}\n  {notice}" if notice else line
