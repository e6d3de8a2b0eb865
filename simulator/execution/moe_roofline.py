"""The roofline for mixtures of experts, latent attention, sliding windows and parallel layouts.

Per rank of each pipeline stage (layouts: simulator/spec/parallel.py), for one micro-batch of T
tokens over R rows:

    dense part   max(its weight bytes / bandwidth, 2 x its params x T/dp / peak)
                 (attention projections, dense MLPs, shared experts; dp groups split the rows)
    MoE layer    experts touched: E (1 - (1 - k/E)^T) of E, 1/ep of them on each rank, each read
                 once (a small batch reads many experts); compute 2 x T x k x expert params /
                 (tp x dp). Under expert parallelism the busiest rank sets the pace: it receives
                 `imbalance` times the mean tokens, so it touches (E/ep)(1 - (1 - k/E)^(T x
                 imbalance)) experts and computes imbalance times the mean (with ep = 1 every rank
                 holds a slice of every expert and routing cannot unbalance the ranks)
    attention    per row max(KV bytes read / bandwidth, QK^T and PV FLOPs / peak); a sliding layer
                 reads at most its window; MLA decode runs absorbed (scores over the latent and
                 rotary key, values over the latent), MLA prefill expanded
    exchange     dp = 1: two all-reduces per layer over tp ranks (ring);
                 dp > 1: one all-reduce over tp per layer (two in dense layers), and per MoE layer
                 an all-to-all dispatch and combine: each rank sends its T/(tp x dp) tokens' k
                 copies of hidden x 2 bytes, (ep-1)/ep of them off-rank, x imbalance
    LM head      on the last stage: max(head bytes / bandwidth, 2 x vocab x hidden / tp x R/dp / peak)

A step splits its rows into m = min(micro_batches, rows) micro-batches that flow through the pp
stages (GPipe forward schedule): step = overhead + sum over stages t_s + (m - 1) x max t_s, plus
(pp - 1) activation sends per micro-batch between stages (over the inter-node link when the
replica spans nodes). With m = 1 that is every stage in turn; the bubble is (pp - 1)/(m + pp - 1).
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from simulator.execution.roofline import RooflineEfficiency, RooflineModel, StepOverhead
from simulator.spec import HardwareSpec, ModelSpec, compute_dtype_for, dtype_bytes
from simulator.spec.memory import ACTIVATION_BYTES
from simulator.spec.parallel import Parallelism
from simulator.spec.rank_memory import all_stages, kv_heads_per_rank, stage_weights

PLAIN, DEFAULT_EFFICIENCY, DEFAULT_OVERHEAD = Parallelism(), RooflineEfficiency(), StepOverhead()
DECODE_ROW_TOKENS = 8  # rows with this many new tokens or fewer run MLA absorbed (decode, verification)


def distinct_experts(tokens, num_experts: int, top_k: int):
    """Expected experts at least one of `tokens` tokens is routed to (uniform routing, top-k of E)."""
    return num_experts * (1.0 - (1.0 - top_k / num_experts) ** np.asarray(tokens, dtype=np.float64))


def all_to_all_bytes(tokens, model: ModelSpec, layout: Parallelism, imbalance: float = 1.0):
    """Bytes one rank sends in one MoE layer's dispatch (the combine sends as many back)."""
    if layout.ep <= 1:
        return np.zeros_like(np.asarray(tokens, dtype=np.float64))
    per_rank = np.asarray(tokens, dtype=np.float64) / layout.stage_ranks
    off_rank = (layout.ep - 1) / layout.ep
    return per_rank * model.num_experts_per_token * model.hidden_size * ACTIVATION_BYTES * off_rank * imbalance


class MoERooflineModel:
    """Step time of one replica laid out as `layout`, from specs (see the module docstring)."""

    provenance = "roofline"

    def __init__(self, model: ModelSpec, hardware: HardwareSpec, *, layout: Parallelism = PLAIN,
                 weight_dtype: str = "fp16", kv_dtype: str = "fp16", expert_dtype: str | None = None,
                 compute_dtype: str | None = None, micro_batches: int | None = None, routing_imbalance: float = 1.0,
                 efficiency: RooflineEfficiency = DEFAULT_EFFICIENCY, overhead: StepOverhead = DEFAULT_OVERHEAD,
                 notice: str = ""):  # fmt: skip
        layout.validate(model)
        self.model, self.hardware, self.layout = model, hardware, layout
        self.tp = layout.tp
        self.weight_dtype, self.kv_dtype = weight_dtype, kv_dtype
        self.expert_dtype = model.resolved_expert_dtype(weight_dtype, expert_dtype)
        self.compute_dtype = compute_dtype or compute_dtype_for(weight_dtype)
        self.micro_batches = layout.pp if micro_batches is None else micro_batches
        self.imbalance = routing_imbalance
        self._rank_imbalance = routing_imbalance if layout.ep > 1 else 1.0
        self.efficiency, self.overhead, self.notice = efficiency, overhead, notice
        eff = efficiency
        self._bw = hardware.memory_bandwidth * eff.memory_bandwidth
        self._peak = hardware.peak_flops(self.compute_dtype) * eff.linear_compute
        self._expert_peak = hardware.peak_flops(compute_dtype or compute_dtype_for(self.expert_dtype)) * eff.linear_compute
        self._attn_peak = hardware.peak_flops("fp16") * eff.attention_compute
        self._link = hardware.interconnect_bandwidth * eff.interconnect
        spans_nodes = layout.gpus > hardware.gpus_per_node
        self._stage_link = (hardware.internode_bandwidth if spans_nodes else hardware.interconnect_bandwidth) * eff.interconnect
        self._stages = [self._stage_constants(s) for s in all_stages(model, layout)]

    def _stage_constants(self, stage) -> dict:
        m, lay, tp = self.model, self.layout, self.layout.tp
        w = stage_weights(m, lay, stage)
        head = m.lm_head_params / tp if stage.last else 0.0
        head_bytes = head * (2.0 if m.tie_embeddings else dtype_bytes(self.weight_dtype))
        linear = w.linear - (0.0 if m.tie_embeddings else head)
        gathered = (m.embedding_params + m.encoder_params) / tp if stage.first else 0.0
        gathered += head if (stage.last and m.tie_embeddings and not stage.first) else 0.0
        dense_bytes = linear * dtype_bytes(self.weight_dtype) + (w.high - gathered) * 2.0
        kv_heads = 1 if m.uses_mla else kv_heads_per_rank(m, tp)
        per_layer_kv = m.kv_bytes_per_token_per_layer(self.kv_dtype) * (1 if m.uses_mla else kv_heads / m.num_kv_heads)
        heads = m.num_heads / tp
        if m.uses_mla:
            expanded = 2 * heads * m.attention_width
            absorbed = 2 * heads * (2 * m.kv_lora_rank + m.qk_rope_head_dim)
        else:
            expanded = absorbed = 4 * heads * m.head_dim
        ring = 2 * (tp - 1) / tp * m.hidden_size * ACTIVATION_BYTES / self._link if tp > 1 else 0.0
        ring_fixed = 2 * (tp - 1) * self.hardware.interconnect_latency if tp > 1 else 0.0
        if lay.dp == 1:
            reduces = 2 * stage.layers
        else:
            reduces = stage.layers + stage.dense
        return {
            "dense_read_s": dense_bytes / self._bw,
            "dense_s_per_token": 2 * linear / self._peak,
            "moe_layers": stage.moe,
            "expert_read_s": m.expert_params / lay.moe_tp * dtype_bytes(self.expert_dtype) / self._bw if m.is_moe else 0.0,
            "expert_s_per_token": (2 * m.num_experts_per_token * m.expert_params / lay.stage_ranks / self._expert_peak
                                   if m.is_moe else 0.0),
            "head_read_s": head_bytes / self._bw,
            "head_s_per_row": 2 * head / self._peak,
            "full_layers": stage.full, "sliding_layers": stage.sliding,
            "kv_s_per_token": per_layer_kv / self._bw,
            "attn_expanded_s": expanded / self._attn_peak, "attn_absorbed_s": absorbed / self._attn_peak,
            "reduce_s_per_token": reduces * ring / lay.dp,
            "reduce_fixed_s": reduces * ring_fixed,
        }  # fmt: skip

    # --- the model, over arrays shaped (steps, rows) -----------------------------------------
    def _terms(self, new: np.ndarray, cached: np.ndarray) -> dict[str, np.ndarray]:
        m, lay = self.model, self.layout
        new = np.asarray(new, dtype=np.float64)
        cached = np.asarray(cached, dtype=np.float64)
        active = new > 0
        rows = active.sum(axis=-1)
        any_work = rows > 0
        micro = np.maximum(np.minimum(self.micro_batches, rows), 1)
        tokens = new.sum(axis=-1) / micro  # one micro-batch
        seqs = rows / micro
        dp = lay.dp
        context = cached + new
        window = m.sliding_window if m.num_sliding_window_layers else 0
        decode_row = active & (new <= DECODE_ROW_TOKENS)
        query_keys = new * (cached + (new + 1) / 2)
        query_keys_window = new * np.minimum(cached + (new + 1) / 2, window) if window else 0.0
        link = self._link
        a2a = all_to_all_bytes(tokens, m, lay, self.imbalance)
        a2a_s = 2 * (a2a / link + (lay.ep - 1) * self.hardware.interconnect_latency) if lay.ep > 1 and dp > 1 else 0.0
        if m.is_moe and dp > 1 and lay.ep == 1:  # MoE tensor-parallel over every rank: gather, then reduce-scatter
            r = lay.stage_ranks
            a2a_s = 2 * (tokens * m.hidden_size * ACTIVATION_BYTES * (r - 1) / r / link)
        busiest = tokens * self._rank_imbalance
        distinct = distinct_experts(busiest, m.num_experts, m.num_experts_per_token) / lay.ep if m.is_moe else 0.0
        step = {"new": new, "cached": cached, "active": active, "rows": rows, "micro": micro, "tokens": tokens,
                "seqs": seqs, "context": context, "window": window, "decode_row": decode_row,
                "query_keys": query_keys, "query_keys_window": query_keys_window, "busiest": busiest,
                "distinct": distinct}  # fmt: skip
        stage_s, parts = [], {"linear": 0.0, "experts": 0.0, "attention": 0.0, "exchange": 0.0, "lm_head": 0.0}
        for c in self._stages:
            linear = self._linear_s(c, step)
            experts = c["moe_layers"] * self._expert_layer_s(c, step) if c["moe_layers"] else 0.0
            attention = self._attention_s(c, step, active)
            exchange = tokens * c["reduce_s_per_token"] + c["reduce_fixed_s"] + c["moe_layers"] * a2a_s
            head = self._head_s(c, step) if c["head_read_s"] else 0.0
            for name, value in (("linear", linear), ("experts", experts), ("attention", attention),
                                ("exchange", exchange), ("lm_head", head)):  # fmt: skip
                parts[name] = parts[name] + value
            stage_s.append(linear + experts + attention + exchange + head)
        stacked = np.stack(np.broadcast_arrays(*stage_s))
        send = tokens * m.hidden_size * ACTIVATION_BYTES / lay.stage_ranks / self._stage_link
        pipeline = stacked.sum(axis=0) + (micro - 1) * stacked.max(axis=0) + (lay.pp - 1) * micro * send
        oh = self.overhead
        overhead = oh.constant_s + rows * oh.per_sequence_s + new.sum(axis=-1) * oh.per_token_s
        out = {"overhead": overhead, "gpu": np.where(any_work, pipeline, 0.0)}
        out.update({k: np.where(any_work, v, 0.0) for k, v in parts.items()})
        out["micro_batches"] = micro.astype(np.float64)
        return out

    # --- the parts a measured-table model replaces (simulator/execution/kernels/moe_step_model.py) ---
    # `step`: the arrays of one call of _terms (rows, tokens and seqs of one micro-batch, ...).
    def _linear_s(self, c: dict, step: dict) -> np.ndarray:
        """One micro-batch's dense weights of a stage: read once, or their FLOPs at a group's tokens."""
        return np.maximum(c["dense_read_s"], step["tokens"] / self.layout.dp * c["dense_s_per_token"])

    def _expert_layer_s(self, c: dict, step: dict) -> np.ndarray:
        """One MoE layer's routed experts on the busiest rank."""
        return np.maximum(step["distinct"] * c["expert_read_s"], step["busiest"] * c["expert_s_per_token"])

    def _head_s(self, c: dict, step: dict) -> np.ndarray:
        return np.maximum(c["head_read_s"], step["seqs"] / self.layout.dp * c["head_s_per_row"])

    def _attention_s(self, c: dict, step: dict, rows: np.ndarray) -> np.ndarray:
        """One micro-batch of one attention group: the stage's layers over the rows where `rows`."""
        context, window = step["context"], step["window"]
        kv_full = np.where(rows, context, 0.0).sum(axis=-1) * c["kv_s_per_token"]
        kv_slide = np.where(rows, np.minimum(context, window), 0.0).sum(axis=-1) * c["kv_s_per_token"]
        flops_s = np.where(step["decode_row"], c["attn_absorbed_s"], c["attn_expanded_s"])
        math_full = (np.where(rows, step["query_keys"], 0.0) * flops_s).sum(axis=-1)
        math_slide = (np.where(rows, step["query_keys_window"], 0.0) * flops_s).sum(axis=-1) if window else 0.0
        return (c["full_layers"] * np.maximum(kv_full, math_full)
                + c["sliding_layers"] * np.maximum(kv_slide, math_slide)) / step["micro"] / self.layout.dp

    @staticmethod
    def _total(terms: dict[str, np.ndarray]) -> np.ndarray:
        return terms["overhead"] + terms["gpu"]

    # --- ExecutionModel: the dense roofline's, over this model's own _terms and _total -----------
    # (roofline_breakdown: seconds per part summed over stages for one micro-batch; `gpu` is the
    # pipelined total, `total` adds the overhead)
    step_time = RooflineModel.step_time
    decode_run_times = RooflineModel.decode_run_times
    is_extrapolated = RooflineModel.is_extrapolated
    roofline_breakdown = RooflineModel.roofline_breakdown

    def describe(self) -> dict:
        out = {
            "provenance": self.provenance,
            "model": self.model.name,
            "hardware": self.hardware.name,
            "tp": self.tp,
            "parallelism": self.layout.as_dict(),
            "micro_batches": self.micro_batches,
            "pipeline_bubble": (self.layout.pp - 1) / (self.micro_batches + self.layout.pp - 1),
            "routing_imbalance": self.imbalance,
            "weight_dtype": self.weight_dtype,
            "expert_dtype": self.expert_dtype,
            "kv_dtype": self.kv_dtype,
            "compute_dtype": self.compute_dtype,
            "efficiency": asdict(self.efficiency),
            "overhead": asdict(self.overhead),
            "sources": {"model": self.model.source, "hardware": self.hardware.source,
                        "moe": "experts read: E(1-(1-k/E)^tokens) under uniform routing"},
        }  # fmt: skip
        if self.notice:
            out["notice"] = self.notice
        return out
