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


def run_sources(model, new_tokens, cached_tokens, num_steps: int = 1) -> tuple[Counter, bool]:
    """`step_sources` of `num_steps` steps and whether the first one is extrapolated, in one call
    where the model offers one (the kernel-table model does)."""
    own = getattr(model, "run_sources", None)
    if own is not None:
        return own(new_tokens, cached_tokens, num_steps)
    extrapolated = model.is_extrapolated(new_tokens, cached_tokens)
    return step_sources(model, new_tokens, cached_tokens, num_steps), extrapolated


def source_of(execution: dict) -> str:
    """Where a run's step times came from, in one phrase: the measured tables with their package and
    engine version, a calibration file, or the roofline (with why no tables were used)."""
    if "prefill" in execution and "decode" in execution:  # a disaggregated run: both pools
        return f"prefill: {source_of(execution['prefill'])}; decode: {source_of(execution['decode'])}"
    if execution.get("kernel_tables"):
        src = execution.get("source", {})
        line = (f"measured kernel tables of {execution.get('engine')} {execution.get('engine_version')} from "
                f"{src.get('package', '?')} {src.get('package_version', '')} ({execution['kernel_tables']})")
        if execution.get("from_tables"):  # a mixture of experts: some parts measured, the rest roofline
            line += f" for {execution['from_tables']}; {execution['from_roofline']} from the roofline"
            line += "".join(f" ({note})" for note in execution.get("notes", []))
        return line
    if execution.get("calibration"):
        return f"{execution.get('provenance', '')} calibration {execution['calibration']}"
    where = execution.get("provenance", "")
    return f"{where}: {execution['notice']}" if execution.get("notice") else where


def count_line(counts: dict) -> str:
    """'N measured-range, M interpolated, K extrapolated, R roofline'."""
    return ", ".join(f"{counts.get(label, 0):,} {label}" for label in LABELS)


def format_step_sources(info: dict) -> str | None:
    """'step times: <source>; N measured-range, M interpolated, K extrapolated, R roofline'."""
    counts = info.get("step_sources")
    if not counts:
        return None
    return f"step times: {source_of(info.get('execution', {}))}; {count_line(counts)}"
