"""Step times of a mixture of experts from measured tables, on the layout of the MoE roofline.

The step is composed as in simulator/execution/moe_roofline.py (per pipeline stage, per
micro-batch, data-parallel attention groups, the busiest expert-parallel rank setting the pace);
three of its parts come from a kernel-table file instead of the specs:

    MoE layers   the measured MoE table of the deployment's expert layout (moe_tp x ep) and expert
                 dtype, at the tokens entering the layer (simulator/execution/kernels/moe.py)
    dense GEMMs  attention projections (GQA qkv/o; MLA fused q_a+kv_a, q_b, kv_b, o), dense MLPs
                 and shared experts at M = one attention group's tokens, the LM head at M = its
                 rows, from the file's GEMM table of the weight dtype; the 16-bit routers and
                 norms are still read at the roofline's bandwidth
    MLA layers   a latent-attention model's rows from the file's MLA module tables (the layer's
                 projections and attention measured together): a decode row pays T(B, L_row) / B
                 of the decode module (B = the group's decode rows, L = its KV length), a prefill
                 chunk the prefill module's T(B, s) / B at s = cached + new tokens times the new
                 share of causal work, (s^2 - p^2) / s^2, and at least one read of its KV (the
                 rules of simulator/execution/kernels/attention.py); those rows' projections
                 leave the GEMM part
    the rest     the exchange (all-reduces, all-to-all), pipeline sends and the host overhead stay
                 the roofline's, and so does attention without a module table

Provenance counts the table-priced parts: a step is measured-range when every one of them lies
inside its measured range, extrapolated when one is past it, roofline when one had no table (no
measured layout or dtype). Attention and the exchange are roofline by design and not counted;
`describe()` lists which part came from where.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from simulator.execution.kernels.attention import DecodeAttention, PrefillAttention, SlicePricer
from simulator.execution.kernels.gemm import GemmCurves, SpeedOfLight
from simulator.execution.kernels.interpolate import Provenance
from simulator.execution.kernels.moe import TABLE_EXPERT_DTYPE, find_curve
from simulator.execution.kernels.op_table import KernelTables
from simulator.execution.kernels.shapes import Gemm
from simulator.execution.kernels.step_model import TABLE_DTYPE, table_origin
from simulator.execution.moe_roofline import (
    DEFAULT_EFFICIENCY,
    DEFAULT_OVERHEAD,
    PLAIN,
    MoERooflineModel,
    distinct_experts,
)
from simulator.spec import HardwareSpec, ModelSpec, compute_dtype_for, dtype_bytes
from simulator.spec.parallel import Parallelism
from simulator.spec.rank_memory import all_stages, kv_heads_per_rank, stage_weights


def attention_gemms(model: ModelSpec, tp: int) -> tuple[Gemm, ...]:
    """One layer's attention projections on one of `tp` ranks (vLLM's sharding)."""
    h, heads = model.hidden_size, model.num_heads // tp
    if model.uses_mla:
        rope, latent = model.qk_rope_head_dim, model.kv_lora_rank
        q_in = model.q_lora_rank or h
        out = [Gemm("q_a_kv_a", (model.q_lora_rank or 0) + latent + rope, h)]  # replicated, fused
        out += [Gemm("q_b", heads * (model.head_dim + rope), q_in),
                Gemm("kv_b", heads * (model.head_dim + model.v_head_dim), latent),
                Gemm("o", h, heads * model.v_head_dim)]  # fmt: skip
        return tuple(out)
    d, kv = model.head_dim, kv_heads_per_rank(model, tp)
    return Gemm("qkv", (heads + 2 * kv) * d, h), Gemm("o", h, heads * d)


def mlp_gemms(hidden: int, width: int, tp: int, name: str) -> tuple[Gemm, ...]:
    """A gated MLP of `width` split over `tp` ranks (gate and up fused)."""
    if width <= 0:
        return ()
    return Gemm(f"{name}_gate_up", 2 * width // tp, hidden), Gemm(f"{name}_down", hidden, width // tp)


class MoEKernelTableModel(MoERooflineModel):
    provenance = "kernel-tables"

    def __init__(self, tables: KernelTables, model: ModelSpec, hardware: HardwareSpec, *,
                 layout: Parallelism = PLAIN, weight_dtype: str = "bf16", kv_dtype: str = "bf16",
                 expert_dtype: str | None = None, micro_batches: int | None = None, routing_imbalance: float = 1.0,
                 efficiency=DEFAULT_EFFICIENCY, overhead=DEFAULT_OVERHEAD, where: str = ""):  # fmt: skip
        super().__init__(model, hardware, layout=layout, weight_dtype=weight_dtype, kv_dtype=kv_dtype,
                         expert_dtype=expert_dtype, micro_batches=micro_batches, routing_imbalance=routing_imbalance,
                         efficiency=efficiency, overhead=overhead)  # fmt: skip
        if not model.is_moe:
            raise LookupError(f"{model.name} has no mixture of experts")
        self.tables, self.where, self.notes = tables, where, []
        want = TABLE_EXPERT_DTYPE.get(self.expert_dtype, "")
        moe = tables.moe_for(want)
        if not moe:
            raise LookupError(f"no {self.expert_dtype} MoE table (the file holds {', '.join(tables.moe_dtypes) or 'none'})")
        self.curve, why = find_curve(moe, model.hidden_size, model.moe_intermediate_size, model.num_experts_per_token,
                                     model.num_experts, layout.moe_tp, layout.ep)  # fmt: skip
        if self.curve is None:
            self.notes.append(f"{why}: MoE layers from the roofline")
        # Balanced routing measures the mean rank; the busiest receives `imbalance` x its share.
        self._table_scale = self._rank_imbalance if self.curve is not None and self.curve.balanced else 1.0
        self._moe_code = Provenance.ROOFLINE if self.curve is None else Provenance.MEASURED
        self.gemm: GemmCurves | None = None
        gemm_table = tables.gemm_for(TABLE_DTYPE.get(weight_dtype, ""))
        if gemm_table is None:
            self.notes.append(f"no {weight_dtype} GEMM table (the file holds {', '.join(tables.gemm_dtypes) or 'none'})"
                              ": dense layers from the roofline")
        else:
            self.gemm = GemmCurves(gemm_table)
            self._sol = SpeedOfLight(hardware.memory_bandwidth, hardware.peak_flops(compute_dtype_for(weight_dtype)),
                                     dtype_bytes(weight_dtype))
            self._gemm_stage_setup()
        self._dense_code = Provenance.ROOFLINE if self.gemm is None else Provenance.MEASURED
        self.mla = self._mla_module(tables)
        self.mla_prefill = self._mla_prefill(tables) if self.mla is not None else None

    def _mla_module(self, tables: KernelTables) -> DecodeAttention | None:
        """The decode pricer of the MLA module table for this deployment, or None (noted)."""
        m = self.model
        if not m.uses_mla or not tables.mla:
            return None
        if self.gemm is None:  # the module holds the projections the GEMM part would otherwise price
            self.notes.append("MLA module table unused without a GEMM table: attention from the roofline")
            return None
        table = tables.mla_for(TABLE_DTYPE.get(self.weight_dtype, ""))
        if table is None:
            self.notes.append(f"no {self.weight_dtype} MLA module table: attention from the roofline")
            return None
        try:
            return DecodeAttention(SlicePricer(table.table, m.num_heads // self.layout.tp, 1,
                                               m.kv_lora_rank + m.qk_rope_head_dim,
                                               TABLE_DTYPE.get(self.kv_dtype, ""), growth=1.0))  # fmt: skip
        except LookupError as exc:
            self.notes.append(f"MLA decode: {exc}; attention from the roofline")
            return None

    def _mla_prefill(self, tables: KernelTables) -> PrefillAttention | None:
        m = self.model
        table = tables.mla_for(TABLE_DTYPE.get(self.weight_dtype, ""), "context")
        if table is None:
            self.notes.append(f"no {self.weight_dtype} MLA prefill module table: prefill attention from the roofline")
            return None
        try:
            pricer = SlicePricer(table.table, m.num_heads // self.layout.tp, 1, m.kv_lora_rank + m.qk_rope_head_dim,
                                 TABLE_DTYPE.get(self.kv_dtype, ""), growth=2.0)  # fmt: skip
        except LookupError as exc:
            self.notes.append(f"MLA prefill: {exc}; prefill attention from the roofline")
            return None
        return PrefillAttention(pricer, self.mla)

    # --- construction ------------------------------------------------------------------------
    def _gemm_stage_setup(self) -> None:
        m, lay, tp = self.model, self.layout, self.layout.tp
        attention = attention_gemms(m, tp)
        dense = mlp_gemms(m.hidden_size, m.intermediate_size, tp, "mlp")
        shared = mlp_gemms(m.hidden_size, m.shared_expert_intermediate_size, tp, "shared")
        head = Gemm("lm_head", -(-m.vocab_size // tp), m.hidden_size)
        for c, stage in zip(self._stages, all_stages(m, lay)):
            w = stage_weights(m, lay, stage)
            gathered = (m.embedding_params + m.encoder_params) / tp if stage.first else 0.0
            gathered += m.lm_head_params / tp if (stage.last and m.tie_embeddings and not stage.first) else 0.0
            c["attn_gemms"] = [(stage.layers, g) for g in attention if stage.layers]
            c["gemms"] = [(n, g) for n, g in [(stage.dense, g) for g in dense] + [(stage.moe, g) for g in shared] if n]
            c["high_read_s"] = (w.high - gathered) * 2.0 / self._bw
            c["head_gemm"] = head if stage.last else None
            c["dense_grid"] = c["attn_grid"] = c["head_grid"] = None

    def _grid(self, c: dict, key: str, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Seconds and codes of a stage's attention projections (key attn_grid), other dense GEMMs
        (dense_grid) or LM head (head_grid) at M = 0, 1, ..., size or more, tabulated once and
        extended by doubling."""
        have = c[key]
        if have is not None and len(have[0]) > size:
            return have
        n = max(size + 1, 2 * (len(have[0]) if have is not None else 0), 1025)
        grid = np.arange(1, n, dtype=np.float64)
        total, code = np.zeros_like(grid), np.zeros(grid.shape, np.int8)
        shapes = {"dense_grid": c["gemms"], "attn_grid": c["attn_gemms"], "head_grid": [(1, c["head_gemm"])]}[key]
        for count, g in shapes:
            t, k = self.gemm.times(g.n, g.k, grid, self._sol)
            total, code = total + count * t, np.maximum(code, k)
        c[key] = (np.concatenate([[0.0], total]), np.concatenate([[0], code]).astype(np.int8))
        return c[key]

    def _lookup(self, c: dict, key: str, m: np.ndarray) -> np.ndarray:
        m = np.asarray(m, dtype=np.float64)
        seconds, _ = self._grid(c, key, int(np.ceil(m.max())) if m.size else 1)
        return np.interp(m, np.arange(len(seconds), dtype=np.float64), seconds)

    # --- the parts priced from the tables ----------------------------------------------------
    def _linear_s(self, c: dict, step: dict) -> np.ndarray:
        if self.gemm is None:
            return MoERooflineModel._linear_s(self, c, step)
        dp = self.layout.dp
        # an MLA module prices its decode rows' projections with their attention
        decode, prefill = self._module_rows(step, step["active"])
        in_modules = np.where(decode | prefill, step["new"], 0.0).sum(axis=-1) / step["micro"]
        return (self._lookup(c, "dense_grid", step["tokens"] / dp)
                + self._lookup(c, "attn_grid", (step["tokens"] - in_modules) / dp) + c["high_read_s"])

    def _module_rows(self, step: dict, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows an MLA decode module and an MLA prefill module price (masks)."""
        none = np.zeros_like(rows)
        if self.mla is None:
            return none, none
        decode = rows & (step["new"] == 1)
        return decode, (rows & ~decode if self.mla_prefill is not None else none)

    def _attention_s(self, c: dict, step: dict, rows: np.ndarray) -> np.ndarray:
        if self.mla is None:
            return MoERooflineModel._attention_s(self, c, step, rows)
        decode, prefill = self._module_rows(step, rows)
        others = MoERooflineModel._attention_s(self, c, step, rows & ~decode & ~prefill)
        layers = c["full_layers"] + c["sliding_layers"]
        if not layers:
            return others
        if prefill.any():
            others = others + layers * self._prefill_module_s(step, prefill) / np.maximum(step["micro"], 1) / self.layout.dp
        kv_len = step["cached"] + 1.0
        counts = decode.sum(axis=-1)
        micro = np.broadcast_to(step["micro"], counts.shape)
        module = np.zeros(np.shape(counts))
        for n, mb in {(int(a), int(b)) for a, b in zip(np.ravel(counts), np.ravel(micro))}:  # one in a decode run
            if n == 0:
                continue
            a, b, _, _ = self.mla.segments(self._group_batch(n, mb))
            seg = np.searchsorted(self.mla.knot_len, kv_len, side="right")
            per_row = np.where(decode, a[seg] + b[seg] * kv_len, 0.0).sum(axis=-1)
            module = np.where((counts == n) & (micro == mb), per_row, module)
        return others + layers * module / np.maximum(step["micro"], 1) / self.layout.dp

    def _prefill_module_s(self, step: dict, prefill: np.ndarray) -> np.ndarray:
        """Per step, one layer's prefill-module seconds summed over its prefill rows (steps with
        prefill rows come one at a time; a 2-D call is priced step by step)."""
        new, cached = np.atleast_2d(step["new"]), np.atleast_2d(step["cached"])
        mask, micro = np.atleast_2d(prefill), np.broadcast_to(step["micro"], (new.shape[0],))
        out = np.zeros(new.shape[0])
        for i in np.flatnonzero(mask.any(axis=-1)):
            rows = mask[i]
            batch = self._group_batch(int(rows.sum()), int(micro[i]))
            out[i] = self.mla_prefill.seconds(new[i][rows], cached[i][rows], batch=batch)[0]
        return out.reshape(np.shape(step["tokens"]))

    def _group_batch(self, rows: int, micro: int) -> int:
        """Rows of one kind (decode or prefill) one attention group runs in one micro-batch: the
        batch an MLA module is read at (rows are taken to spread evenly, as the roofline does)."""
        return max(1, round(rows / (self.layout.dp * max(micro, 1))))

    def _head_s(self, c: dict, step: dict) -> np.ndarray:
        if self.gemm is None:
            return MoERooflineModel._head_s(self, c, step)
        return self._lookup(c, "head_grid", step["seqs"] / self.layout.dp)

    def _roofline_layer(self, c: dict):
        m, ep = self.model, self.layout.ep

        def layer(tokens):
            distinct = distinct_experts(tokens, m.num_experts, m.num_experts_per_token) / ep
            return MoERooflineModel._expert_layer_s(self, c, {"busiest": tokens, "distinct": distinct})

        return layer

    def _expert_layer_s(self, c: dict, step: dict) -> np.ndarray:
        if self.curve is None:
            return MoERooflineModel._expert_layer_s(self, c, step)
        # the table reads the stage's tokens times the imbalance it was not measured with
        return self.curve.seconds_at(step["tokens"] * self._table_scale, self._roofline_layer(c))[0]

    # --- provenance --------------------------------------------------------------------------
    def _step_code(self, new: np.ndarray) -> Provenance:
        """Provenance of the table-priced parts of one step (rows of `new`)."""
        new = np.asarray(new, dtype=np.float64)
        rows = int((new > 0).sum())
        if rows == 0:
            return Provenance.MEASURED
        micro = max(min(self.micro_batches, rows), 1)
        tokens = float(new.sum()) / micro
        code = max(self._moe_code, self._dense_code)
        if self.curve is not None and tokens * self._table_scale > self.curve.tokens[-1]:
            code = max(code, Provenance.EXTRAPOLATED)
        if self.gemm is not None:
            dp = self.layout.dp
            decode = new == 1
            in_modules = 0.0 if self.mla is None else float(new[decode].sum() + (
                new[(new > 0) & ~decode].sum() if self.mla_prefill is not None else 0.0)) / micro
            for c in self._stages:
                for key, used in (("dense_grid", tokens), ("attn_grid", tokens - in_modules)):
                    m = int(np.ceil(used / dp))
                    if m > 0:
                        code = max(code, int(self._grid(c, key, m)[1][m]))
                if c["head_gemm"] is not None:
                    head = self._grid(c, "head_grid", int(np.ceil(rows / micro / dp)))[1]
                    code = max(code, int(head[int(np.ceil(rows / micro / dp))]))
        return Provenance(code)

    def run_sources(self, new_tokens, cached_tokens, num_steps: int = 1) -> tuple[Counter, bool]:
        """Provenance labels of `num_steps` steps (a decode run keeps its rows, so its token count
        and with it the MoE and GEMM parts' provenance stay those of its first step; an MLA
        module's KV lengths grow one per step and may leave its measured range)."""
        new = np.atleast_1d(new_tokens)
        base = self._step_code(new)
        decode = (new == 1)
        prefill = (new > 1)
        if self.mla_prefill is not None and prefill.any():  # such a step is priced alone
            cached = np.atleast_1d(np.asarray(cached_tokens, dtype=np.float64))
            micro = max(min(self.micro_batches, int((new > 0).sum())), 1)
            code = self.mla_prefill.seconds(new[prefill].astype(np.float64), cached[prefill],
                                            batch=self._group_batch(int(prefill.sum()), micro))[1]
            base = Provenance(max(base, code))
        if self.mla is None or not decode.any():
            return Counter({base.label: num_steps}), base is Provenance.EXTRAPOLATED
        kv = np.atleast_1d(np.asarray(cached_tokens, dtype=np.float64))[decode] + 1.0
        rows = int((new > 0).sum())
        batch = self._group_batch(int(decode.sum()), max(min(self.micro_batches, rows), 1))
        _, _, until, code = self.mla.segments(batch)
        first = Provenance(max(base, code))
        reach = max(0, int(until - kv.max()) + 1) if kv.min() >= self.mla.knot_len[0] else 0
        inside = min(num_steps, reach)
        beyond = Provenance(max(first, Provenance.EXTRAPOLATED))
        out = Counter()
        if inside:
            out[first.label] = inside
        if num_steps > inside:
            out[beyond.label] += num_steps - inside
        return out, (first if reach else beyond) is Provenance.EXTRAPOLATED

    def step_sources(self, new_tokens, cached_tokens, num_steps: int = 1) -> Counter:
        return self.run_sources(new_tokens, cached_tokens, num_steps)[0]

    def is_extrapolated(self, new_tokens, cached_tokens) -> bool:
        return self.run_sources(new_tokens, cached_tokens)[1]

    # --- reporting ---------------------------------------------------------------------------
    def describe(self) -> dict:
        out = super().describe()
        table_parts = []
        if self.curve is not None:
            table_parts.append("MoE layers")
        if self.gemm is not None:
            table_parts.append("dense GEMMs and LM head")
        if self.mla is not None:
            table_parts.append("MLA decode" + (" and prefill" if self.mla_prefill is not None else "") + " layers")
        out.update({
            "provenance": self.provenance,
            **table_origin(self.tables, self.where),
            "moe_table": self.curve.describe() if self.curve is not None else "roofline",
            "gemm_kernel": self.gemm.table.kernel if self.gemm is not None else "roofline",
            "mla_module": {phase: ", ".join(f"{x.heads} heads {x.kv_dtype} ({x.kernel})" for x in part.pricer.slices)
                           if part is not None else "roofline"
                           for phase, part in (("decode", self.mla), ("prefill", self.mla_prefill))},
            "from_tables": ", ".join(table_parts) or "nothing",
            "from_roofline": ("" if self.mla_prefill is not None else
                              "prefill attention, " if self.mla is not None else "attention, ")
                             + "exchange, pipeline sends, host overhead"
                             + ("" if self.curve is not None else ", MoE layers")
                             + ("" if self.gemm is not None else ", dense layers"),
            "notes": list(self.notes),
        })  # fmt: skip
        out["sources"] = {**out["sources"], "moe": out["moe_table"]}
        return out
