"""`llmsim run`: simulate one scenario, print its tables, write its results folder."""

from __future__ import annotations

from simulator.cli.scripting import emit_json, formats, human_output, results_folder, verdict_code
from simulator.execution.kernels.provenance import format_step_sources


def cmd_run(args) -> int:
    from simulator.metrics.report import measurement_lines, print_summary, request_changes
    from simulator.scenario import load_scenario, run
    from simulator.studies.trials import rule_for

    scenario = load_scenario(args.scenario, args.set)
    out = results_folder(args, scenario.name, [s for s in args.set if s != "run.strict=true"])
    table_formats = formats(args)
    with human_output(args):
        results = run(scenario, seed=args.seed)
        results.save(out, force=args.force, formats=table_formats)
        print_summary(results.summary, title=f"{scenario.name}: {results.description}")
        written = ", ".join(["summary.json", *(f"requests.{f}" for f in table_formats),
                             *(f"timeseries.{f}" for f in table_formats), "plots/*.png"])
        print(f"results: {out}/ ({written})")
        for line in request_changes(results.info) + measurement_lines(results.info):
            print(line)
        _print_scheduling(results.info)
        _print_extrapolated(results.info)
        if (line := format_step_sources(results.info)) is not None:
            print(line)
        if "autoscaling" in results.info:
            _print_autoscaling(scenario, results, args.compare_fixed)
    rule = rule_for(scenario, None)
    verdict = rule.evaluate(results.summary)
    state = results.info.get("steady_state", {})
    emit_json(args, {"results": str(out), "description": results.description,
                     "slo_rule": None if rule.empty else rule.describe(),
                     "slo_met": None if rule.empty else verdict.met, "misses": verdict.misses(),
                     "summary": results.summary.to_dict(),
                     "run": {k: v for k, v in results.info.items() if k != "wall_time_s"}})
    return verdict_code(args, {
        "saturated": results.summary.saturation_reason if results.summary.saturated else "",
        "slo": "; ".join(verdict.misses()) if not rule.empty and not verdict.met else "",
        "unsteady": "" if state.get("steady", True) else state.get("reason", "not steady"),
    })


def _print_extrapolated(info: dict) -> None:
    """Say how many step times came from outside the calibration's measured range."""
    extrapolated, steps = info.get("extrapolated_steps", 0), info.get("steps", 0)
    if extrapolated:
        execution = info.get("execution", {})
        where = execution.get("calibration") or execution.get("kernel_tables") or "the calibration"
        print(f"extrapolated: {extrapolated:,} of {steps:,} steps ({extrapolated / max(steps, 1):.1%}) lie outside "
              f"the range measured for {where}; their times are extrapolations")


def _print_scheduling(info: dict) -> None:
    """One line each for prefix caching, swapping and speculative decoding, when used."""
    if "prefix_cache_hit_rate" in info:
        note = f" ({info['prefix_cache_note']})" if "prefix_cache_note" in info else ""
        print(f"prefix cache: {info['prefix_cache_hit_rate']:.1%} of prompt tokens found cached{note}")
    if "swap_outs" in info:
        print(f"swap: {info['swap_outs']:,} preemptions swapped KV to host memory")
    spec = info.get("speculative")
    if spec and spec["verify_steps"]:
        print(f"speculative decoding: {spec['acceptance']:.1%} of draft tokens accepted, "
              f"{spec['tokens_per_verify_step']:.2f} tokens per sequence per verify step")


def _print_autoscaling(scenario, results, compare: bool) -> None:
    scaling = results.info["autoscaling"]
    print(f"autoscaling: {scaling['mean_replicas']:.2f} replicas on average, peak {scaling['peak_replicas']}, "
          f"{scaling['replica_hours']:.2f} replica-hours, ${scaling['usd_per_day']:,.2f} per day "
          "(replicas over time: replicas.csv, plots/replicas.png)")
    if compare:
        from simulator.studies.scaling_compare import autoscaled_vs_fixed

        table, _ = autoscaled_vs_fixed(scenario, seed=results.info["seed"])
        print(table.to_string(index=False, float_format=lambda v: f"{v:,.2f}"))
