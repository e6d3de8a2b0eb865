"""`llmsim validate`: the same workload on the real engine and in the simulator, and the difference.

The real side replays the scenario's requests in real time on the backend engine, in this process
(calibration/replay.py), or, with `--url`, measures any running server with `llmsim bench`.

The simulated side runs the scenario with its execution model (normally `execution: {calibration:
...}`), but with the engine's actual KV capacity (num_blocks), block size, context limit and
scheduler settings, so both sides have the same capacity, plus the engine's measured host overhead
per step; these settings are written to validation.json so the comparison can be reproduced.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from calibration.measure.bench import truncate
from calibration.measure.replay import (
    HostOverhead,
    WithHostOverhead,
    build_engine,
    engine_settings,
    replay,
    warm_up,
)
from calibration.validation.accuracy import Comparison, Tolerances, compare, overlay_plots
from calibration.validation.matched import simulate_like
from calibration.validation.noise_floor import floor_summary, judge_against_floor
from calibration.validation.schedule_check import ScheduleCheck, check_schedule
from calibration.validation.server_match import settings_from_server
from simulator.common.errors import ConfigError
from simulator.common.files import result_files
from simulator.execution import ExecutionModel
from simulator.metrics import summarize
from simulator.metrics.results import Results
from simulator.scenario import Scenario, execution_model
from simulator.workload import Workload, generate


def simulate_with_overhead(
    scenario: Scenario, workload: Workload, settings: dict, overhead: HostOverhead | None, seed: int
) -> Results:
    """The scenario's step-time model plus the engine's host overhead, with the engine's settings."""
    execution = execution_model(scenario)
    if overhead is not None:
        execution = WithHostOverhead(execution, overhead)
    return simulate_like(scenario, workload, settings, seed, execution=execution)


def step_model_error(steps: pd.DataFrame, model: ExecutionModel) -> dict:
    """How well the step-time model predicts the engine's own steps in this run (execution only,
    no host overhead): adds a `predicted_s` column to `steps` and returns, per kind of step
    (prefill, decode, mixed, all), the count, the median error and the error of the summed time.
    End-to-end errors of the run follow mostly from these."""
    predicted = [model.step_time(np.array(list(map(int, str(n).split()))), np.array(list(map(int, str(c).split()))))
                 for n, c in zip(steps["new_tokens"], steps["cached_tokens"])]  # fmt: skip
    steps["predicted_s"] = predicted
    prefill, decode = steps["num_prefill_tokens"] > 0, steps["num_decode_seqs"] > 0
    kinds = np.where(prefill & decode, "mixed", np.where(prefill, "prefill", "decode"))
    out = {}
    for kind in ("prefill", "decode", "mixed", "all"):
        rows = steps[(kinds == kind) | (kind == "all")]
        if len(rows):
            err = rows["predicted_s"] / rows["execute_s"] - 1
            out[kind] = {
                "steps": len(rows),
                "median_error": round(float(err.median()), 4),
                "total_time_error": round(float(rows["predicted_s"].sum() / rows["execute_s"].sum() - 1), 4),
            }
    return out


@dataclass
class Validation:
    measured: Results
    simulated: Results
    comparison: Comparison
    settings: dict
    steps: pd.DataFrame | None = None
    step_errors: dict = field(default_factory=dict)  # see step_model_error
    workload: Workload | None = None  # the requests both sides served (send times with --url)
    schedule_check: ScheduleCheck | None = None  # the engine's own step times replayed (in-process runs)
    repeat: Results | None = None  # the real side measured again on the same requests (--noise-floor)

    def save(self, out: str | Path, *, force: bool = False) -> Path:
        with result_files(out, force=force) as stage:
            self._write_into(stage)
        return Path(out)

    def _write_into(self, out: Path) -> None:
        sides = [("measured", self.measured), ("simulated", self.simulated)]
        if self.repeat is not None:
            sides.append(("measured_repeat", self.repeat))
        for side, results in sides:
            (out / side).mkdir()
            results.write_into(out / side)
        if self.steps is not None:
            self.steps.to_csv(out / "engine_steps.csv", index=False, float_format="%.9g")
        self.comparison.table.to_csv(out / "comparison.csv", index=False, float_format="%.6g")
        overlay_plots(self.measured, self.simulated, out / "plots")
        report = {"passed": self.comparison.passed, "noise_floor": self.repeat is not None, "tolerances": self.comparison.tolerances.__dict__,
                  "settings": self.settings, "step_model_error": self.step_errors,
                  "schedule_check": None if self.schedule_check is None else self.schedule_check.__dict__,
                  "comparison": json.loads(self.comparison.table.to_json(orient="records"))}  # fmt: skip
        (out / "validation.json").write_text(json.dumps(report, indent=2, default=str) + "\n")


def validate(
    scenario: Scenario,
    *,
    seed: int | None = None,
    url: str | None = None,
    device: str = "cpu",
    num_blocks: int | None = None,
    threads: int | None = None,
    max_requests: int | None = None,
    tolerances: Tolerances | None = None,
    progress: bool = True,
    noise_floor: bool = False,
    idle: str = "sleep",
) -> Validation:
    """Run the scenario's workload for real and simulated, and compare. With `noise_floor`, the
    real side is measured twice on the same requests and each statistic is judged against
    max(tolerance, real-vs-real difference) (noise_floor.py). `idle`: how the in-process engine
    waits between arrivals (replay.replay)."""
    repeat = None
    seed = scenario.seed if seed is None else seed
    if url is None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        engine = build_engine(scenario, device=device, num_blocks=num_blocks, seed=seed)
        workload = truncate(generate(scenario.workload, seed=seed, max_context=engine.max_model_len,
                                     base_dir=scenario.base_dir), max_requests)  # fmt: skip
        overhead = warm_up(engine, seed)
        real = replay(engine, workload, seed=seed, progress=progress, idle=idle)
        if noise_floor:  # other tokens of the same lengths: nothing of the first run in the cache
            repeat = replay(engine, workload, seed=seed, progress=progress, run=1, idle=idle).results
        settings = engine_settings(engine, threads)
        settings["host_overhead"] = overhead.__dict__
        settings["idle"] = idle
        steps = real.steps
        measured = real.results
    else:
        measured, workload, settings, overhead, repeat = _measure_server(scenario, url, seed, num_blocks,
                                                                         max_requests, progress, noise_floor)  # fmt: skip
        steps = None
    settings.update({"seed": seed, "scenario": scenario.name, "requests": len(workload),
                     "calibration": scenario.execution.calibration})  # fmt: skip
    simulated = simulate_with_overhead(scenario, workload, settings, overhead, seed)
    comparison = compare(measured, simulated, tolerances or Tolerances())
    if repeat is not None:
        comparison = judge_against_floor(comparison, compare(measured, repeat, comparison.tolerances))
    errors, schedule = {}, None
    if steps is not None and len(steps):
        errors = step_model_error(steps, execution_model(scenario))
        schedule = check_schedule(measured, steps, scenario, workload, settings, seed)
    return Validation(measured, simulated, comparison, settings, steps, errors, workload, schedule, repeat)


def resimulate(
    validation: Validation, scenario: Scenario, tolerances: Tolerances | None = None
) -> Validation:
    """The same measured run compared with another simulation of it, e.g. with another calibration
    (`scenario` differs from the validated one only in its execution section)."""
    s = validation.settings
    overhead = HostOverhead(**s["host_overhead"]) if s.get("host_overhead") else None
    simulated = simulate_with_overhead(scenario, validation.workload, s, overhead, s["seed"])
    comparison = compare(validation.measured, simulated, tolerances or validation.comparison.tolerances)
    if validation.repeat is not None:
        comparison = judge_against_floor(comparison, compare(validation.measured, validation.repeat,
                                                             comparison.tolerances))  # fmt: skip
    steps = validation.steps.copy() if validation.steps is not None else None
    errors = step_model_error(steps, execution_model(scenario)) if steps is not None and len(steps) else {}
    settings = {**s, "calibration": scenario.execution.calibration}
    return Validation(validation.measured, simulated, comparison, settings, steps, errors, validation.workload,
                      validation.schedule_check, validation.repeat)  # fmt: skip


def _bench_aligned(url, workload, seed, progress):
    """One measured run of `workload`, its times starting at 0 at the first send, and the workload
    with each request's actual send time as its arrival."""
    from dataclasses import replace

    from calibration.measure.bench import bench
    from calibration.measure.loadgen import Target

    run = bench(Target(url), workload, seed=seed, progress=progress)
    sent = run.client.set_index("id")["sent"]
    start = float(sent.min())
    sent_workload = replace(workload, requests=[replace(r, arrival=float(sent[r.request_id]) - start)
                                                for r in workload.requests])  # fmt: skip
    for record in run.results.records:  # the same origin as the simulator: first send at 0
        record.arrival -= start
        record.token_times = record.token_times - start
    measured = Results(summarize(run.results.records, slos=workload.slos), run.results.records, None,
                       workload.slos, run.results.description, run.results.info)  # fmt: skip
    return run, measured, sent_workload


def _measure_server(scenario, url, seed, num_blocks, max_requests, progress, noise_floor=False):
    """The real side from a running server: bench the workload, then replay the actual send times
    in the simulator (the client's clock and the simulator's then agree on every arrival). With
    `noise_floor`, the same requests are sent again (new prompt tokens, same lengths and times)."""
    from calibration.measure.bench import bench_scenario_workload

    planned = bench_scenario_workload(scenario, seed, max_requests)
    run, measured, workload = _bench_aligned(url, planned, seed, progress)
    repeat = _bench_aligned(url, planned, seed, progress)[1] if noise_floor else None
    settings, warnings = settings_from_server(scenario, run.server, num_blocks)
    settings.update({"url": url, "warnings": warnings,
                     "server_prefix_cache_hit_rate": run.results.info.get("server_prefix_cache_hit_rate")})
    return measured, workload, settings, None, repeat


def setting_lines(result: Validation) -> list[str]:
    """What the simulated side was set up with, the settings assumed, and the prefix-cache hit
    rates of both sides (server runs)."""
    s, sched = result.settings, result.settings["scheduler"]
    if "url" not in s:
        return [(f"{s['scenario']}: {s['requests']} requests, engine KV cache {s['num_blocks']} blocks x "
                f"{s['block_size']} tokens, policy {sched['policy']} (the simulator used the same)")]  # fmt: skip
    lines = [
        (f"{s['scenario']}: {s['requests']} requests; simulated with KV cache {s['num_blocks']} blocks x "
        f"{s['block_size']} tokens, prefix caching {'on' if sched.get('enable_prefix_caching') else 'off'}, "
        f"max_num_seqs {sched.get('max_num_seqs')}, max_num_batched_tokens {sched.get('max_num_batched_tokens')}, "
        f"max_model_len {s['max_model_len']}, policy {sched['policy']}")
    ]
    read = (s.get("server_config") or {}).get("read") or {}
    lines.append("read from the server: " + (", ".join(f"{k} {v}" for k, v in read.items()) or "nothing"))
    lines += [f"warning: {w}" for w in s.get("warnings", [])]
    real, sim = s.get("server_prefix_cache_hit_rate"), result.simulated.info.get("prefix_cache_hit_rate")
    lines.append("prefix cache hit rate (prompt tokens found cached): server "
                 + ("not exposed" if real is None else f"{real:.1%}")
                 + ", simulated " + ("off" if sim is None else f"{sim:.1%}"))  # fmt: skip
    return lines


def run_cli(args) -> int:
    """`llmsim validate`: exit 0 when every checked statistic is within tolerance and the schedule
    check (in-process runs) found the simulator making the engine's schedule; 1 otherwise."""
    from calibration.validation.accuracy import print_comparison
    from simulator.scenario import load_scenario

    tolerances = Tolerances.parse(args.tolerance)
    for flag in ("threads", "num_blocks", "max_requests"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    scenario = load_scenario(args.scenario, args.set)
    result = validate(scenario, seed=args.seed, url=args.url, device=args.device, num_blocks=args.num_blocks,
                      threads=args.threads, max_requests=args.max_requests, tolerances=tolerances,
                      noise_floor=getattr(args, "noise_floor", False), idle=getattr(args, "idle", "sleep"))  # fmt: skip
    out = Path(args.out) if args.out else Path("results") / scenario.name / "validate"
    result.save(out, force=args.force)
    for line in setting_lines(result):
        print(line)
    print_comparison(result.comparison, title=f"{scenario.name}: simulated vs measured")
    if result.repeat is not None:
        print(floor_summary(result.comparison))
    if result.schedule_check is not None:
        print(result.schedule_check.line())
    if result.step_errors:
        parts = [f"{kind} {e['total_time_error']:+.1%} over {e['steps']} steps"
                 for kind, e in result.step_errors.items() if kind != "all"]  # fmt: skip
        print(
            "step-time model on this run's engine steps (predicted / measured time - 1): " + ", ".join(parts)
        )
    print(
        f"results: {out}/ (comparison.csv, validation.json, measured/, simulated/, plots/*_real_vs_sim.png)"
    )
    schedule_ok = result.schedule_check is None or result.schedule_check.identical
    return 0 if result.comparison.passed and schedule_ok else 1
