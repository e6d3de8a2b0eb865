"""A served workload as results: one record per request, the replicas' time series, the summary,
and the provenance of the run (what ran, how many steps, what was clipped), for colocated and
disaggregated deployments alike."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pandas as pd

from simulator.metrics import RequestRecord, summarize
from simulator.metrics.results import Results
from simulator.scheduling import SeqStatus, Sequence
from simulator.serving.deployment import Deployment
from simulator.serving.replica import Replica
from simulator.serving.simulate import Served
from simulator.workload import Workload


def record(seq: Sequence, note: str = "") -> RequestRecord:
    """A served sequence as a metrics record; `note` says what llmsim changed in the request."""
    if seq.finish_reason in ("length", "stop"):
        status = "ok"
    elif seq.finish_reason == "rejected":
        status = "rejected"
    else:
        status = "unfinished"
    return RequestRecord(
        request_id=seq.seq_id,
        request_class=seq.request_class,
        arrival=seq.arrival,
        prompt_tokens=seq.prompt_len,
        token_times=np.asarray(seq.token_times),
        status=status,
        replica=seq.replica,
        num_preemptions=seq.num_preemptions,
        cached_prompt_tokens=seq.num_cached_prefix,
        reason=seq.rejection or note,
    )


def timeseries_frame(replicas: list[Replica]) -> pd.DataFrame:
    rows = [s for r in replicas for s in r.samples]
    frame = pd.DataFrame(rows, columns=["time", "replica", "waiting", "running", "kv_usage", "busy"])
    return frame.sort_values(["time", "replica"], kind="stable").reset_index(drop=True)


def run_counts(served: Served, workload: Workload, started: float) -> dict:
    """What a run did (steps, preemptions, clipped lengths, unfinished requests, times)."""
    return {
        "steps": sum(r.num_steps for r in served.replicas),
        "extrapolated_steps": sum(r.num_extrapolated_steps for r in served.replicas),
        "step_sources": dict(sum((r.step_sources for r in served.replicas), Counter())),
        "preemptions": sum(s.num_preemptions for s in served.seqs),
        "clipped_prompts": workload.clipped_prompts,
        "clipped_outputs": workload.clipped_outputs,
        "rejected": rejected_counts(served.seqs),
        **({"skipped_trace_rows": workload.skipped_trace_rows} if workload.skipped_trace_rows else {}),
        "simulated_time_s": served.end,
        "unfinished_at_end": sum(s.status is not SeqStatus.FINISHED for s in served.seqs),
        "wall_time_s": round(time.perf_counter() - started, 3),
    }


def rejected_counts(seqs: list[Sequence]) -> dict[str, int]:
    """Rejected requests by kind of reason (the part of the reason before its numbers)."""
    return dict(Counter(s.rejection.split(":", 1)[0] for s in seqs if s.rejection))


def scheduling_info(deployment: Deployment, served: Served) -> dict:
    """What prefix caching, swapping and speculation did in a run."""
    info: dict = {}
    seqs = served.seqs
    settings = [p.resolved_scheduler for p in deployment.pools]  # the policy's defaults decide when unset
    if any(s.enable_prefix_caching for s in settings):
        admitted = [s for s in seqs if s.first_scheduled is not None]
        prompt = sum(s.prompt_len for s in admitted)
        info["prefix_cache_hit_rate"] = sum(s.num_cached_prefix for s in admitted) / prompt if prompt else 0.0
        if not any(s.block_hashes for s in seqs):
            info["prefix_cache_note"] = (
                "no request names its prompt blocks, so nothing can be shared; "
                "traces with hash ids such as Mooncake's do"
            )
    if any(s.preemption_mode == "swap" for s in settings):
        info["swap_outs"] = sum(r.scheduler.host.num_swap_outs for r in served.replicas)
    if served.speculation is not None and served.replicas:
        info["speculative"] = served.speculation.report()
    return info


def _colocated_info(deployment: Deployment) -> dict:
    pool = deployment.entry
    return {
        "hardware": pool.hardware,
        "replicas": pool.replicas,
        "tensor_parallel": pool.tensor_parallel,
        **({} if pool.layout.is_plain else {"parallelism": pool.layout.as_dict()}),
        "weight_dtype": deployment.weight_dtype,
        "kv_dtype": deployment.kv_dtype,
        "policy": deployment.policy,
        "router": deployment.router,
        "kv_blocks_per_replica": pool.num_blocks,
        "kv_tokens_per_replica": pool.kv_tokens_per_replica,
        "execution": pool.execution.describe(),
    }


def _disaggregated_info(deployment: Deployment, served: Served) -> dict:
    prefill_pool, decode_pool = deployment.pools
    prefill, decode = prefill_pool.describe(), decode_pool.describe()
    link, replicas = deployment.link, served.replicas
    transfers = np.asarray(served.handoff.transfer_s)
    same = prefill["hardware"] == decode["hardware"]
    return {
        "hardware": prefill["hardware"] if same else f"{prefill['hardware']} (prefill) + {decode['hardware']} (decode)",
        "replicas": prefill["replicas"] + decode["replicas"],
        "gpus": prefill_pool.replicas * prefill_pool.gpus_per_replica + decode_pool.replicas * decode_pool.gpus_per_replica,
        "weight_dtype": deployment.weight_dtype,
        "kv_dtype": deployment.kv_dtype,
        "policy": deployment.policy,
        "router": deployment.router,
        "disaggregation": {
            "prefill": prefill | {"replica_ids": [r.id for r in replicas[: prefill["replicas"]]]},
            "decode": decode | {"replica_ids": [r.id for r in replicas[prefill["replicas"]:]]},
            "link_gbps": link.bandwidth / 1e9,
            "link_latency_us": link.latency * 1e6,
            "kv_bytes_per_token_per_gpu": link.bytes_per_token,
            "transfers": int(transfers.size),
            "transfer_s_mean": float(transfers.mean()) if transfers.size else None,
            "transfer_s_max": float(transfers.max()) if transfers.size else None,
        },
        "execution": {"prefill": prefill_pool.execution.describe(), "decode": decode_pool.execution.describe()},
    }


def describe(deployment: Deployment) -> str:
    """One line naming what ran."""
    if deployment.colocated:
        p = deployment.entry
        layout = "" if p.layout.is_plain else f" ({p.layout.describe()})"
        return (f"{deployment.model} on {p.replicas}x{p.gpus_per_replica} {p.hardware}{layout}, "
                f"{deployment.weight_dtype} weights, {deployment.policy} batching")  # fmt: skip
    prefill, decode = deployment.pools
    return (
        f"{deployment.model}, disaggregated: {prefill.replicas}x{prefill.tensor_parallel} {prefill.hardware} "
        f"prefill + {decode.replicas}x{decode.tensor_parallel} {decode.hardware} decode, "
        f"{deployment.weight_dtype} weights, {deployment.policy} batching"
    )


def results(deployment: Deployment, served: Served, workload: Workload, seed: int, started: float) -> Results:
    """Summarise a served workload: records, time series, summary and provenance."""
    timeseries = timeseries_frame(served.replicas)
    records = [record(s, r.clipping) for s, r in zip(served.seqs, workload.requests)]
    cost_per_hour = deployment.usd_per_hour
    scaling = None
    if served.autoscaler is not None:  # pay for the replica-hours actually provisioned
        scaling = served.autoscaler.report(served.end, cost_per_hour / deployment.entry.replicas)
        cost_per_hour = scaling["cost_usd"] / served.end * 3600 if served.end > 0 else 0.0
    summary = summarize(records, slos=workload.slos, cost_per_hour=cost_per_hour, timeseries=timeseries)
    shape = _colocated_info(deployment) if deployment.colocated else _disaggregated_info(deployment, served)
    info = {"scenario": deployment.name, "seed": seed, "model": deployment.model, **shape,
            **run_counts(served, workload, started)}  # fmt: skip
    if scaling is not None:
        info["autoscaling"] = scaling
    info.update(scheduling_info(deployment, served))
    return Results(summary, records, timeseries, workload.slos, describe(deployment), info)
