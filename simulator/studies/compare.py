"""Paired comparison of variants of one scenario (policies, routers, any overrides), with
confidence intervals.

Every variant is simulated with the same seeds: replication r uses seed `base + r` for all of
them, so they serve identical arrivals and lengths (common random numbers; the workload's random
streams do not depend on the deployment). The difference of a metric between a variant and the
baseline (the first variant) is taken within each replication; the N paired differences give a
mean, a paired-bootstrap interval, a ratio to the baseline with its interval and a p-value
adjusted across the metrics (Holm; compare_stats.py). Pairing removes the replication-to-replication
noise of the workload, so a few replications separate policies that unpaired runs could not.

    comparison = compare(scenario, [policy_variant("vllm"), policy_variant("static")], replications=5)
    comparison.table        # one row per (variant, metric): mean, difference, CI, p-value
    save_comparison(comparison, "results/x/compare")  # simulator.studies.compare_report
"""

from __future__ import annotations

import copy
import hashlib
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from simulator.common.errors import ConfigError
from simulator.metrics import Summary
from simulator.scenario import Scenario, apply_overrides, parse_scenario
from simulator.scheduling import POLICIES, find_policy, plugins
from simulator.serving.routing import ROUTERS
from simulator.studies.compare_stats import ALPHA, CONFIDENCE, holm, paired_difference


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_is_better: bool


METRICS: tuple[Metric, ...] = (
    *(Metric(f"ttft_p{p}_ms", f"TTFT p{p}", "ms", False) for p in (50, 90, 99)),
    *(Metric(f"tpot_p{p}_ms", f"TPOT p{p}", "ms", False) for p in (50, 90, 99)),
    *(Metric(f"e2e_p{p}_ms", f"E2E p{p}", "ms", False) for p in (50, 90, 99)),
    Metric("throughput_rps", "throughput", "req/s", True),
    Metric("output_tokens_per_s", "output tokens/s", "tok/s", True),
    Metric("goodput_rps", "goodput", "req/s", True),
    Metric("slo_attainment_pct", "SLO attainment", "%", True),
    Metric("usd_per_1m_output_tokens", "cost per 1M output tokens", "USD", False),
)
METRIC_BY_KEY = {m.key: m for m in METRICS}
KEPT_COLUMNS = ("id", "class", "status", "arrival", "prompt_tokens", "output_tokens", "ttft", "tpot", "e2e",
                "itl_mean", "itl_max")


# --- variants ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """A named change to the scenario: `--set`-style overrides, KEY=VALUE with dotted keys."""

    name: str
    overrides: tuple[str, ...] = ()

    def apply(self, scenario: Scenario) -> Scenario:
        data = apply_overrides(copy.deepcopy(scenario.model_dump(mode="json")), list(self.overrides))
        return parse_scenario(data, source=f"variant {self.name!r}", base_dir=scenario.base_dir)


def policy_variant(name: str) -> Variant:
    """`--policy NAME`: a batching policy (scheduler.policy: a built-in name, one an installed
    package registers, or module:Class), or a router (router). The variant is named after the
    policy (its class name for module:Class)."""
    if name in ROUTERS and name not in POLICIES:
        return Variant(name, (f"router={name}",))
    if name in POLICIES or name in plugins.registered_names() or plugins.is_qualified(name):
        find_policy(name)  # fails now, naming the policy, rather than inside a worker
        label = name.rpartition(":")[2] if plugins.is_qualified(name) else name
        return Variant(label, (f"scheduler.policy={name}",))
    raise ConfigError(
        f"--policy {name!r}: not a batching policy ({', '.join(sorted([*POLICIES, *plugins.registered_names()]))}, "
        f"or module:Class for your own) nor a router ({', '.join(sorted(ROUTERS))}); use --variant "
        "NAME:KEY=VALUE,... for other changes"
    )


_NEXT_OVERRIDE = re.compile(r",(?=\s*[A-Za-z_][\w.]*=)")  # a comma that starts a new KEY=


def parse_variant(text: str) -> Variant:
    """`NAME:KEY=VALUE,KEY=VALUE` (values parsed as YAML, as with --set; a comma inside a value
    such as `[1,2]` is kept). `NAME` or `NAME:` alone is the scenario as written."""
    name, _, rest = text.partition(":")
    name = name.strip()
    if not name or not re.fullmatch(r"[\w.+-]+", name):
        raise ConfigError(
            f"--variant {text!r}: expected NAME:KEY=VALUE,KEY=VALUE with a name of letters, digits, "
            "'_', '-', '.' or '+', e.g. disagg:disaggregation.prefill.replicas=1"
        )
    overrides = tuple(part.strip() for part in _NEXT_OVERRIDE.split(rest) if part.strip())
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--variant {text!r}: {item!r} is not KEY=VALUE")
    return Variant(name, overrides)


# --- one run's metrics ---------------------------------------------------------------------------


def metrics_of(summary: Summary) -> dict[str, float]:
    """The compared metrics of one run (NaN where undefined)."""

    def ms(metric: str, p: int) -> float:
        value = getattr(summary.latency[metric], f"p{p}")
        return np.nan if value is None else value * 1000

    def num(value) -> float:
        return np.nan if value is None else float(value)

    row = {f"{m}_p{p}_ms": ms(m, p) for m in ("ttft", "tpot", "e2e") for p in (50, 90, 99)}
    row.update(
        throughput_rps=num(summary.request_throughput),
        output_tokens_per_s=num(summary.output_throughput),
        goodput_rps=num(summary.goodput),
        slo_attainment_pct=np.nan if summary.slo_attainment is None else summary.slo_attainment * 100,
        usd_per_1m_output_tokens=num(summary.cost_per_million_output_tokens),
    )
    return row


def _workload_digest(requests: pd.DataFrame) -> str:
    """Fingerprint of what arrived (ids, times, prompt lengths): equal across variants under
    common random numbers."""
    cols = requests.sort_values("id")[["id", "arrival", "prompt_tokens"]].to_numpy(dtype=float)
    return hashlib.sha1(cols.tobytes()).hexdigest()[:16]


def run_replication(task: dict[str, Any]) -> dict[str, Any]:
    """One variant at one seed (module level, so worker processes and Ray can run it)."""
    from simulator.scenario import run

    base = task["base_dir"]
    scenario = parse_scenario(task["scenario"], base_dir=Path(base) if base else None)
    results = run(scenario, seed=task["seed"])
    s = results.summary
    row = metrics_of(s) | {
        "saturated": s.saturated,
        "unfinished": s.unfinished,
        "workload": _workload_digest(results.requests),
        "wall_s": results.info["wall_time_s"],
    }
    if task["keep_requests"]:  # the columns the CDFs pool over replications
        row["requests"] = results.measured_requests[[c for c in KEPT_COLUMNS if c in results.requests]]
    return row


# --- the comparison ------------------------------------------------------------------------------


@dataclass
class Comparison:
    name: str
    variants: list[Variant]
    seeds: list[int]
    runs: pd.DataFrame  # one row per (variant, replication): seed and every metric
    requests: dict[str, pd.DataFrame]  # per variant, the measured requests of every replication (column replication)
    slos: dict = field(default_factory=dict)

    @property
    def baseline(self) -> str:
        return self.variants[0].name

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.variants]

    @property
    def common_random_numbers(self) -> bool:
        """Whether every variant served the same requests in each replication."""
        return bool((self.runs.groupby("replication")["workload"].nunique() == 1).all())

    def saturated_runs(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.runs.groupby("variant", sort=False)["saturated"].sum().items()}

    @cached_property
    def table(self) -> pd.DataFrame:
        """One row per (variant, metric): mean and std over replications, and against the
        baseline the mean paired difference (variant - baseline) with its bootstrap interval, the
        relative difference (ratio of means - 1, %) with its interval, the p-value and its Holm
        adjustment across the metrics, whether it is significant and whether the variant is then
        better or worse."""
        rows = []
        for metric in METRICS:
            wide = self.runs.pivot(index="replication", columns="variant", values=metric.key)
            base = wide[self.baseline].to_numpy(float)
            for name in self.names:
                values = wide[name].to_numpy(float)
                d = paired_difference(base, values)
                rows.append(
                    {
                        "variant": name,
                        "metric": metric.key,
                        "unit": metric.unit,
                        "mean": float(np.nanmean(values)) if np.isfinite(values).any() else np.nan,
                        "std": float(np.nanstd(values, ddof=1)) if np.isfinite(values).sum() > 1 else np.nan,
                        "n": d["n"],
                        "diff": d["diff"],
                        "ci_low": d["ci_low"],
                        "ci_high": d["ci_high"],
                        "rel_diff_pct": 100 * (d["ratio"] - 1),
                        "rel_ci_low_pct": 100 * (d["ratio_low"] - 1),
                        "rel_ci_high_pct": 100 * (d["ratio_high"] - 1),
                        "p_value": d["p_value"],
                    }
                )
        table = pd.DataFrame(rows)
        table["p_holm"] = np.nan
        for name in self.names[1:]:
            mask = table["variant"] == name
            table.loc[mask, "p_holm"] = holm(table.loc[mask, "p_value"].to_numpy())
        table["significant"] = (table["variant"] != self.baseline) & (table["p_holm"] < ALPHA)
        better = [(d > 0) == METRIC_BY_KEY[m].higher_is_better for d, m in zip(table["diff"], table["metric"])]
        table["verdict"] = np.where(table["variant"] == self.baseline, "",
                                    np.where(~table["significant"], "no significant difference",
                                             np.where(better, "better", "worse")))
        return table

    def to_dict(self) -> dict[str, Any]:
        table = self.table.replace({np.nan: None})
        return {
            "scenario": self.name,
            "baseline": self.baseline,
            "variants": [{"name": v.name, "overrides": list(v.overrides)} for v in self.variants],
            "seeds": self.seeds,
            "confidence": CONFIDENCE,
            "intervals": "paired bootstrap over replications (percentile, 9,999 resamples)",
            "p_values": "paired t-test, Holm-adjusted across the metrics of each variant (p_holm); "
                        f"significant when p_holm < {ALPHA}",
            "common_random_numbers": self.common_random_numbers,
            "saturated_runs": self.saturated_runs(),
            "metrics": table.to_dict(orient="records"),
        }


def compare(
    scenario: Scenario,
    variants: list[Variant],
    replications: int = 5,
    *,
    seed: int | None = None,
    workers: int | None = 1,
    ray: str | None = None,
    progress: bool = False,
) -> Comparison:
    """Simulate every variant with seeds `seed, seed + 1, ...` (default: the scenario's seed) and
    pair them by seed. The first variant is the baseline."""
    from simulator.studies.parallel import run_tasks

    if len(variants) < 2:
        raise ConfigError(f"compare needs at least two variants, got {len(variants)}: give --policy or --variant twice")
    names = [v.name for v in variants]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"variant names must be unique, repeated: {', '.join(repeated)}")
    if replications < 1:
        raise ConfigError(f"--replications must be >= 1, got {replications}")
    base_seed = scenario.seed if seed is None else seed
    seeds = [base_seed + r for r in range(replications)]
    scenarios = [v.apply(scenario) for v in variants]  # validates every variant before any work
    base_dir = None if scenario.base_dir is None else str(scenario.base_dir)
    tasks = [
        {"scenario": sc.model_dump(mode="json"), "base_dir": base_dir, "seed": s, "keep_requests": True}
        for r, s in enumerate(seeds)
        for sc in scenarios
    ]
    rows = run_tasks(run_replication, tasks, workers=workers, ray=ray, desc="comparing", progress=progress)
    requests: dict[str, pd.DataFrame] = {}
    records = []
    for i, row in enumerate(rows):
        r, v = divmod(i, len(variants))
        if "requests" in row:
            kept = row.pop("requests").assign(replication=r)
            requests[names[v]] = kept if names[v] not in requests else pd.concat([requests[names[v]], kept],
                                                                                 ignore_index=True)
        records.append({"variant": names[v], "replication": r, "seed": seeds[r]} | row)
    slos = {c.name: c.slo for c in scenario.workload.classes}
    return Comparison(scenario.name, list(variants), seeds, pd.DataFrame(records), requests, slos)
