"""Simulator accuracy against the real engine on CPU: llama-100m, Azure-conversation-shaped lengths
scaled to the 2048-token context, Poisson arrivals at 25/50/75/90% of the measured capacity, with
vLLM-style and static batching. Prints the relative error of the simulator at p50 and p90 of TTFT,
TPOT and E2E and of output throughput, against the targets (5% at p50, 10% at p90, 3% throughput),
and the error of the step-time model on the run's own prefill and decode steps (summed time), which
is where end-to-end errors come from.

    .venv/bin/python benchmarks/bench_accuracy.py [--calibration FILE | --profile] [--requests 120]

Capacity is the request throughput of a saturated run (every request at once); that run is compared
too. Every measured run is simulated with two calibrations: `profile` (the shipped CPU profile, or
`--profile` for a fresh one) and `profile+served` (the profile's points plus the engine steps of two
training runs at 60% load with other requests, one per policy), so the table shows what fitting the
steps a workload actually runs buys. CPU timings move with other work on the machine: the load
average is printed with every row, and the numbers are only worth quoting from a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from calibration.validation.accuracy import Tolerances
from calibration.validation.validate import resimulate, validate
from simulator.scenario import parse_scenario

ROOT = Path(__file__).resolve().parent.parent
AZURE = ROOT / "scenarios" / "traces" / "azure_conv_2023.csv"
CPU_HOST = "cpu-host"
TARGETS = {"p50": 0.05, "p90": 0.10, "throughput": 0.03}
METRICS = (("TTFT", "ttft"), ("TPOT", "tpot"), ("E2E", "e2e"))


def scaled_lengths(out_dir: Path, factor: float) -> Path:
    """The Azure conversation trace's (prompt, output) pairs divided by `factor`, at least 1 token."""
    trace = pd.read_csv(AZURE)
    frame = pd.DataFrame({
        "num_prefill_tokens": np.maximum(np.round(trace["ContextTokens"] / factor), 1).astype(int),
        "num_decode_tokens": np.maximum(np.round(trace["GeneratedTokens"] / factor), 1).astype(int),
    })
    path = out_dir / f"azure_conv_lengths_div{factor:g}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def scenario(model: str, calibration: Path, lengths: Path, policy: str, rate: float, n: int, seed: int,
             max_num_seqs: int):
    hardware = CPU_HOST if _in_catalog(CPU_HOST) else {
        "name": CPU_HOST, "memory_gib": 16, "memory_bandwidth_gbps": 20, "tflops": {"fp32": 0.5},
        "interconnect_gbps": 10}
    return parse_scenario({
        "name": f"accuracy-{policy}", "seed": seed, "model": model, "hardware": hardware,
        "deployment": {"weight_dtype": "fp32", "kv_dtype": "fp32"},
        "scheduler": {"policy": policy, "max_num_seqs": max_num_seqs},
        "execution": {"calibration": str(calibration)},
        "workload": {
            "arrival": {"process": "poisson", "rate": rate}, "num_requests": n,
            "classes": [{"name": "conversation", "prompt_tokens": {"dist": "empirical", "path": str(lengths)},
                         "output_tokens": {"dist": "empirical", "path": str(lengths)}}],
        },
    })


def _in_catalog(name: str) -> bool:
    from simulator.spec import hardware_names

    return name in hardware_names()


def find_calibration(model: str, out_dir: Path, profile: bool, max_batch: int) -> Path:
    """The shipped CPU calibration of `model`, or a fresh profile of it on this machine (the full
    sweep of prefill lengths, batches up to `max_batch`, 3 repeats)."""
    shipped = sorted((ROOT / "calibration" / "profiles").glob(f"{model}*cpu*.yaml"))
    if shipped and not profile:
        return shipped[0]
    from calibration.fitting.fit import calibrate
    from calibration.measure.profile import profile as run_profile

    csv = out_dir / f"{model}-cpu-profile.csv"
    print(f"profiling {model} on this CPU ({torch.get_num_threads()} threads) ...", flush=True)
    run_profile(model, csv, device="cpu", dtype="fp32", max_batch=max_batch, repeats=3, progress=False)
    path = out_dir / f"{model}-cpu.yaml"
    calibrate(csv, path, model=model, hardware=CPU_HOST, dtype="fp32", plot=False)
    return path


def row(policy: str, load: str, calibration: str, result, elapsed: float) -> dict:
    table = result.comparison.table.set_index(["metric", "stat"])
    out = {"policy": policy, "load": load, "calibration": calibration, "rate_rps": result.settings.get("rate"),
           "requests": result.settings["requests"]}
    saturated = load == "saturated"
    for label, key in METRICS:
        for stat in ("p50", "p90"):
            out[f"{key}_{stat}_err"] = np.nan if saturated else float(table.loc[(label, stat), "error"])
        out[f"{key}_paired_err"] = np.nan if saturated else float(table.loc[(label, "paired p50"), "error"])
    out["throughput_err"] = float(table.loc[("output tok/s", "rate"), "error"])
    out["measured_tok_s"] = float(table.loc[("output tok/s", "rate"), "measured"])
    for kind in ("prefill", "decode"):  # the step-time model's own error on this run's steps
        out[f"{kind}_step_err"] = result.step_errors.get(kind, {}).get("total_time_error", np.nan)
    out["preemptions"] = result.measured.info.get("preemptions", 0)
    out["load_avg"] = os.getloadavg()[0]
    out["wall_s"] = round(elapsed, 1)
    checks = [abs(out["throughput_err"]) <= TARGETS["throughput"]]
    if not saturated:
        checks += [abs(out[f"{key}_{stat}_err"]) <= TARGETS[stat] for _, key in METRICS for stat in ("p50", "p90")]
    out["meets_targets"] = all(checks)
    return out


def markdown(frame: pd.DataFrame) -> str:
    errors = [f"{k}_{s}_err" for _, k in METRICS for s in ("p50", "p90")] + \
        [f"{k}_paired_err" for _, k in METRICS] + ["throughput_err", "prefill_step_err", "decode_step_err"]
    head = ["policy", "load", "calibration", "req/s", "TTFT p50", "TTFT p90", "TPOT p50", "TPOT p90", "E2E p50",
            "E2E p90", "paired TTFT", "paired TPOT", "paired E2E", "output tok/s", "prefill steps", "decode steps",
            "targets met", "load avg"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in frame.iterrows():
        cells = [r.policy, r.load, r.calibration, "-" if r.load == "saturated" else f"{r.rate_rps:.2f}"]
        cells += ["-" if np.isnan(r[c]) else f"{r[c]:+.1%}" for c in errors]
        cells += ["yes" if r.meets_targets else "**no**", f"{r.load_avg:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


class Study:
    """Runs the points: each one measured once on the engine and simulated with every calibration."""

    def __init__(self, args, calibrations: dict[str, Path], lengths: Path, tolerances: Tolerances):
        self.args, self.calibrations, self.lengths, self.tolerances = args, calibrations, lengths, tolerances
        self.rows: list[dict] = []

    def scenario(self, policy: str, rate: float, n: int, calibration: Path, seed: int):
        a = self.args
        return scenario(a.model, calibration, self.lengths, policy, rate, n, seed, a.max_num_seqs)

    def measure(self, policy: str, load: str, rate: float, n: int, seed: int | None = None, report: bool = True):
        started = time.perf_counter()
        names = list(self.calibrations)
        seed = self.args.seed if seed is None else seed
        first = validate(self.scenario(policy, rate, n, self.calibrations[names[0]], seed), threads=self.args.threads,
                         tolerances=self.tolerances, progress=False)
        first.settings["rate"] = rate
        if not report:
            return first
        elapsed = time.perf_counter() - started
        for name in names:
            self.report(first, policy, load, name, elapsed)
        return first

    def report(self, measured, policy: str, load: str, name: str, elapsed: float = 0.0) -> None:
        """Add the row of one calibration for one measured run (simulating it again if needed)."""
        s = measured.settings
        result = measured if s["calibration"] == str(self.calibrations[name]) else resimulate(
            measured, self.scenario(policy, s["rate"], s["requests"], self.calibrations[name], s["seed"]))
        result.save(self.args.out / policy / load.replace("%", "pct") / name)
        self.rows.append(row(policy, load, name, result, elapsed))
        print(pd.DataFrame(self.rows[-1:]).to_string(index=False, float_format=lambda v: f"{v:+.3f}"), flush=True)


def served_calibration(args, steps: list[pd.DataFrame], profiled: Path) -> Path:
    """A calibration fitted to the profile's points together with the engine steps of the
    training runs (the profile keeps shapes the training runs did not reach covered)."""
    from calibration.fitting.fit import calibrate
    from calibration.measure.served_steps import steps_to_measurements

    profile_csv = profiled.with_suffix(".csv") if profiled.with_suffix(".csv").is_file() else \
        profiled.with_name(profiled.stem + "-profile.csv")
    csv = steps_to_measurements(steps, args.out / f"{args.model}-served-steps.csv", model=args.model, dtype="fp32",
                                threads=torch.get_num_threads(),
                                profile=profile_csv if profile_csv.is_file() else None)
    path = args.out / f"{args.model}-cpu-served.yaml"
    calibrate(csv, path, model=args.model, hardware=CPU_HOST, dtype="fp32", plot=False)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llama-100m")
    parser.add_argument("--calibration", type=Path, default=None, help="default: the shipped CPU profile")
    parser.add_argument("--profile", action="store_true", help="profile the model now instead")
    parser.add_argument("--no-served", action="store_true",
                        help="skip the second calibration: the profile plus the engine steps of training runs")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the calibration's)")
    parser.add_argument("--requests", type=int, default=80, help="requests per loaded run")
    parser.add_argument("--capacity-requests", type=int, default=48, help="requests of the saturated run")
    parser.add_argument("--train-load", type=float, default=0.6, help="load of the training runs (other seed)")
    parser.add_argument("--loads", default="0.25,0.5,0.75,0.9", help="fractions of the measured capacity")
    parser.add_argument("--policies", default="vllm,static")
    parser.add_argument("--length-scale", type=float, default=4.0, help="Azure lengths are divided by this")
    parser.add_argument("--max-num-seqs", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "accuracy")
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    if args.threads:  # before profiling: step times depend on the thread count
        torch.set_num_threads(args.threads)
    profiled = args.calibration or find_calibration(args.model, args.out, args.profile, args.max_num_seqs)
    if args.threads is None:  # replay with the threads the calibration was measured with
        import yaml

        args.threads = (yaml.safe_load(profiled.read_text()).get("source") or {}).get("threads")
        if args.threads:
            torch.set_num_threads(args.threads)
    lengths = scaled_lengths(args.out, args.length_scale)
    print(f"model {args.model}, calibration {profiled}, {torch.get_num_threads()} threads, "
          f"lengths: Azure conversation / {args.length_scale:g}; load average {os.getloadavg()[0]:.2f}", flush=True)
    tolerances = Tolerances(mean=None, p50=TARGETS["p50"], p90=TARGETS["p90"], throughput=TARGETS["throughput"])
    policies = args.policies.split(",")
    study = Study(args, {"profile": profiled}, lengths, tolerances)

    capacity, bursts = {}, {}
    for policy in policies:
        bursts[policy] = burst = study.measure(policy, "saturated", 1000.0, args.capacity_requests)
        capacity[policy] = burst.measured.summary.request_throughput
        print(f"{policy}: capacity {capacity[policy]:.2f} requests/s (saturated run)", flush=True)
    if not args.no_served:
        # Training runs: other requests (seed + 1) at one load per policy; their engine steps are fitted.
        steps = [study.measure(p, "train", args.train_load * capacity[p], args.requests, args.seed + 1,
                               report=False).steps for p in policies]  # fmt: skip
        study.calibrations["profile+served"] = served_calibration(args, steps, profiled)
        print(f"served-steps calibration: {study.calibrations['profile+served']}", flush=True)
        for policy, burst in bursts.items():
            study.report(burst, policy, "saturated", "profile+served")
    for policy in policies:
        for load in (float(x) for x in args.loads.split(",")):
            study.measure(policy, f"{load:.0%}", load * capacity[policy], args.requests)

    frame = pd.DataFrame(study.rows).sort_values(["calibration", "policy"], kind="stable")
    frame.to_csv(args.out / "accuracy.csv", index=False)
    text = markdown(frame)
    (args.out / "accuracy.md").write_text(text + "\n")
    print()
    print(text)
    for name, group in frame.groupby("calibration", sort=False):
        print(f"{name} calibration: targets met on {int(group.meets_targets.sum())} of {len(group)} points")
    print(f"details: {args.out}/")


if __name__ == "__main__":
    main()
