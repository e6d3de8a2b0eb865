"""`llmsim sweep`, `plan` and `compare`: many simulations, their tables, files and verdicts."""

from __future__ import annotations

from simulator.cli.scripting import emit_json, formats, human_output, results_folder, verdict_code
from simulator.studies.search_space import parse_axes


def cmd_sweep(args) -> int:
    from simulator.studies.capacity_report import print_sweep
    from simulator.studies.sweep import run_sweep

    fixed = [s for s in args.set if len(parse_axes([s])[0].values) == 1 and s != "run.strict=true"]
    table_formats = formats(args)
    with human_output(args):
        result = run_sweep(args.scenario, args.set, seeds=args.seeds, workers=args.workers, ray=args.ray,
                           max_rate=True if args.max_rate else None)
        out = results_folder(args, result.name, fixed, "sweep")
        result.save(out, force=args.force, formats=table_formats)
        print_sweep(result)
        print(f"results: {out}/ (sweep.csv, runs.csv, load_latency.png{', max_rate.json' if result.max_rate else ''})")
    points = result.points.drop(columns=["misses"], errors="ignore")
    emit_json(args, {"results": str(out), "scenario": result.name, "keys": result.keys, "slo_rule": result.rule,
                     "decisive_percentiles": result.decisive, "points": points.to_dict(orient="records"),
                     "max_rate": result.max_rate})
    missed = result.points[~result.points["slo_met"].astype(bool)]
    unsteady = result.points[~result.points["steady"].astype(bool)]
    return verdict_code(args, {
        "saturated": f"{int(result.points['saturated'].sum())} of {len(result.points)} points saturated"
        if result.saturated else "",
        "slo": f"{len(missed)} of {len(result.points)} points miss the SLOs" if result.rule and len(missed) else "",
        "unsteady": f"{len(unsteady)} of {len(result.points)} points did not reach steady state" if len(unsteady)
        else "",
    })


def cmd_plan(args) -> int:
    from simulator.studies.capacity_report import print_plan
    from simulator.studies.plan import run_plan

    table_formats = formats(args)
    overrides = [s for s in args.set if s != "run.strict=true"]
    with human_output(args):
        result = run_plan(args.scenario, overrides=args.set, seeds=args.seeds, workers=args.workers, ray=args.ray)
        out = results_folder(args, result.name, overrides, "plan")
        result.save(out, force=args.force, formats=table_formats)
        print_plan(result)
        print(f"results: {out}/ (candidates.csv, plan.json, pareto.png)")
    emit_json(args, {"results": str(out)} | result.to_dict())
    answer = result.answer() or {}
    code = verdict_code(args, {
        "saturated": "the answer is saturated" if answer.get("saturated") else "",
        "slo": "no candidate meets every SLO" if not result.feasible else "",
        "unsteady": f"the answer did not reach steady state: {answer.get('steady_reason')}"
        if result.feasible and not answer.get("steady") and answer.get("window_s") is not None else "",
    })
    return code if result.feasible else 1


def cmd_compare(args) -> int:
    from simulator.scenario import load_scenario
    from simulator.studies.compare import compare, parse_variant, policy_variant
    from simulator.studies.compare_report import print_comparison, save_comparison

    scenario = load_scenario(args.scenario, args.set)
    variants = [policy_variant(v) if kind == "policy" else parse_variant(v) for kind, v in args.variants]
    table_formats = formats(args)
    out = results_folder(args, scenario.name, [s for s in args.set if s != "run.strict=true"], "compare")
    with human_output(args):
        comparison = compare(scenario, variants, args.replications, seed=args.seed, workers=args.workers,
                             ray=args.ray, progress=True)
        save_comparison(comparison, out, force=args.force, formats=table_formats)
        print_comparison(comparison)
        print(f"results: {out}/ (comparison.csv, comparison.json, runs.csv, plots/*.png)")
    emit_json(args, {"results": str(out)} | comparison.to_dict())
    saturated = {k: v for k, v in comparison.saturated_runs().items() if v}
    return verdict_code(args, {
        "saturated": ", ".join(f"{k} in {v} run(s)" for k, v in saturated.items()),
        "slo": "",
        "unsteady": "",
    })
