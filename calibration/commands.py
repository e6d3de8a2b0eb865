"""What `llmsim profile` and `llmsim calibrate` do, behind the thin parsers in calibration/cli.py."""

from __future__ import annotations

from pathlib import Path

from simulator.common.errors import ConfigError
from simulator.common.files import write_text_atomic


def run_profile(args) -> int:
    if args.ops:
        from calibration.measure.op_profile import run_ops

        return run_ops(args)
    if args.hardware is not None:
        raise ConfigError("--hardware goes with --ops; a step profile names its hardware at llmsim calibrate")
    from calibration.measure.measurements import meta_path
    from calibration.measure.profile import profile

    frame, meta = profile(
        args.model,
        args.out,
        device=args.device,
        dtype=args.dtype,
        quantization=args.quantization,
        quick=args.quick,
        max_tokens=args.max_tokens,
        max_batch=args.max_batch,
        kv_cache_gb=args.kv_gb,
        repeats=args.repeats,
        threads=args.threads,
    )
    spread = ((frame["p75_s"] - frame["p25_s"]) / frame["median_s"]).median()
    print(
        f"profiled {meta['model']} on {meta['device']} ({meta['dtype']}): {len(frame)} step shapes x "
        f"{meta['repeats']} repeats in {meta['wall_time_s']:.0f} s; median spread (IQR / median) {spread:.1%}"
    )
    print(
        f"measured peaks: {meta['measured_memory_bandwidth'] / 1e9:.1f} GB/s memory read, "
        f"{meta['measured_matmul_flops'] / 1e9:.0f} GFLOP/s matmul; load average "
        f"{meta['load_average_before']} -> {meta['load_average_after']}"
    )
    print(f"measurements: {args.out} (metadata: {meta_path(args.out)})")
    print(f"next: llmsim calibrate {args.out} --out {Path(args.out).with_suffix('.yaml')}")
    return 0


def _with_served_steps(profile_csv: Path, steps_csvs: list[str], out: Path, model: str | None) -> Path:
    """The profile's points plus the engine steps of served runs, as one measurements CSV next to `out`."""
    import pandas as pd

    from calibration.measure.measurements import load_measurements
    from calibration.measure.served_steps import steps_to_measurements

    meta = load_measurements(profile_csv).meta
    frames = []
    for name in steps_csvs:
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"--served-steps: {path} not found (the engine_steps.csv that llmsim validate writes)")
        frame = pd.read_csv(path)
        missing = {"new_tokens", "cached_tokens", "execute_s"} - set(frame.columns)
        if missing:
            raise ConfigError(f"--served-steps: {path} has no column {', '.join(sorted(missing))}; "
                              "expected the engine_steps.csv that llmsim validate writes")  # fmt: skip
        frames.append(frame)
    merged = steps_to_measurements(
        frames, out.with_name(out.stem + "-served.csv"), model=model or meta.get("model"),
        dtype=meta.get("dtype"), device=meta.get("device", "cpu"), threads=meta.get("threads"), profile=profile_csv,
    )  # fmt: skip
    print(f"fitting {profile_csv} with the engine steps of {len(frames)} served run(s): {merged}")
    return merged


def run_calibrate(args) -> int:
    from calibration.fitting.fit import calibrate, residual_plot_path
    from calibration.fitting.fit_report import print_fit
    from calibration.fitting.transfer import transfer
    from simulator.execution.calibration_file import load_calibration

    source = args.measurements
    if source is None:
        raise ConfigError(
            "give a measurements CSV from llmsim profile (or a measured calibration YAML with --transfer-to)"
        )
    source_path = Path(source)
    if source_path.suffix in (".yaml", ".yml"):
        if not args.transfer_to:
            raise ConfigError(f"{source}: a calibration file is only an input with --transfer-to HARDWARE")
        measured = load_calibration(source_path)
    else:
        out = None if args.transfer_to else Path(args.out or source_path.with_suffix(".yaml"))
        if args.served_steps:
            source_path = _with_served_steps(source_path, args.served_steps, out or source_path, args.model)
        measured, _, _ = calibrate(source_path, out, model=args.model, hardware=args.hardware, dtype=args.dtype,
                                   folds=args.folds)  # fmt: skip
        print_fit(measured)
        if out is not None:
            print(f"calibration: {out} (residual plot: {residual_plot_path(out)})")
            print(f"use it from a scenario: execution: {{calibration: {out}}}")
            return 0
    moved = transfer(measured, args.transfer_to, target_model=args.target_model, target_dtype=args.target_dtype,
                     source_path=str(source_path))  # fmt: skip
    out = Path(args.out or f"{moved.model}-{moved.hardware}-{moved.dtype}-transferred.yaml")
    header = (
        f"# {moved.model} on {moved.hardware} ({moved.dtype}), transferred from a calibration measured on "
        f"{measured.device or measured.hardware}:\n# written by `llmsim calibrate --transfer-to`. Rough: "
        "see expected_error.\n"
    )
    write_text_atomic(out, header + moved.to_yaml())
    eff = moved.roofline.efficiency
    print(
        f"efficiencies carried to {moved.hardware}: memory bandwidth {eff.memory_bandwidth:.0%}, linear compute "
        f"{eff.linear_compute:.0%}, attention compute {eff.attention_compute:.0%} of peak"
    )
    print(f"expected error: {moved.expected_error}")
    print(f"calibration: {out}")
    return 0
