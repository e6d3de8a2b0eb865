"""A step-time model built from measured kernel times (an ExecutionModel).

    step = host overhead (simulator/execution/kernels/overhead.py) around the GPU time
    GPU  = layers x [QKV, O, gate/up, down GEMMs at M = the step's tokens
                     + element-wise kernels (norms, rotary, KV write, activation)
                     + 2 all-reduces of the step's activations (tensor parallelism)
                     + prefill attention of the step's chunks + decode attention of its decode rows]
         + embedding (+ its all-reduce) + LM head GEMM at M = rows + logits gather + sampling

Everything that depends only on the step's token count or row count is tabulated once over all
counts, so a step costs two lookups plus the attention of its rows; decode attention is piecewise
linear in the KV length, so a run of decode steps is priced with the same arithmetic as one step.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from simulator.execution import RooflineEfficiency
from simulator.execution.kernels import elementwise
from simulator.execution.kernels.attention import DecodeAttention, PrefillAttention, SlicePricer
from simulator.execution.kernels.collectives import Collectives
from simulator.execution.kernels.fallback import RooflineDecode, RooflinePrefill
from simulator.execution.kernels.gemm import GemmCurves, SpeedOfLight
from simulator.execution.kernels.interpolate import Provenance
from simulator.execution.kernels.op_table import KernelTables
from simulator.execution.kernels.overhead import EAGER_KERNELS_PER_LAYER, HostOverhead, runs_as_graph
from simulator.execution.kernels.shapes import rank_shapes
from simulator.spec import HardwareSpec, ModelSpec, compute_dtype_for, dtype_bytes
from simulator.spec.memory import ACTIVATION_BYTES

# fp16 runs at bf16's speed; fp4 is NVFP4 (W4A4 on Blackwell)
TABLE_DTYPE = {"fp32": "fp32", "fp16": "bf16", "bf16": "bf16", "fp8": "fp8", "fp4": "fp4", "nvfp4": "fp4"}


def table_origin(tables: KernelTables, where: str) -> dict:
    """The `describe()` entries naming a kernel-table file, its engine and what it was converted from."""
    src = tables.source
    return {"engine": tables.engine, "engine_version": tables.engine_version, "kernel_tables": where,
            "source": {"package": src.package, "package_version": src.package_version, "licence": src.licence,
                       "system": src.system, "backend": src.backend, "backend_version": src.backend_version}}


class KernelTableModel:
    provenance = "kernel-tables"

    def __init__(self, tables: KernelTables, model: ModelSpec, hardware: HardwareSpec, *, tp: int = 1,
                 weight_dtype: str = "bf16", kv_dtype: str = "bf16", overhead: HostOverhead,
                 allreduce: str = "custom", where: str = ""):
        self.tables, self.model, self.hardware, self.tp = tables, model, hardware, tp
        self.weight_dtype, self.kv_dtype, self.overhead, self.where = weight_dtype, kv_dtype, overhead, where
        self.shapes = rank_shapes(model, tp)
        self.notes: list[str] = []
        gemm_table = tables.gemm_for(TABLE_DTYPE.get(weight_dtype, ""))
        if gemm_table is None:
            raise LookupError(f"no {weight_dtype} GEMM table (the file holds {', '.join(tables.gemm_dtypes)})")
        self.gemm = GemmCurves(gemm_table)
        self.sol = SpeedOfLight(hardware.memory_bandwidth, hardware.peak_flops(compute_dtype_for(weight_dtype)),
                                dtype_bytes(weight_dtype))
        ew = tables.elementwise
        self._bandwidth, self._floor = hardware.memory_bandwidth * ew.bandwidth_efficiency, ew.floor_us * 1e-6
        self.collectives = Collectives(tables.collectives, hardware, RooflineEfficiency().interconnect)
        self._allreduce = self._allreduce_names(allreduce)
        self.decode, self.prefill = self._attention()
        self._dense = {True: None, False: None}  # per-token-count tables, graph and eager
        self._head = None
        self._memo: dict[tuple[bytes, bytes], tuple[float, Provenance]] = {}
        self._decode_code_cache: dict[int, tuple] = {}
        self._decode_fixed_cache: dict[int, tuple] = {}
        self._ensure_dense(8192)
        self._ensure_head(1024)
        # Kernels an eager step launches: every layer's, plus embedding, LM head and sampling.
        self._launches = self.shapes.num_layers * (EAGER_KERNELS_PER_LAYER + (2 if tp > 1 else 0)) + 8

    # --- construction ------------------------------------------------------------------------
    def _allreduce_names(self, choice: str) -> dict[bool, str]:
        """The collective implementation for graph and eager steps."""
        if self.tp == 1:
            return {True: "custom", False: "custom"}
        if choice == "nccl":
            return {True: "nccl", False: "nccl"}
        for graph, eager in (("custom_graph", "custom_eager"), ("custom", "custom")):
            if self.collectives.has("all_reduce", graph, self.tp):
                return {True: graph, False: eager}
        self.notes.append(f"no all-reduce table for {self.tp} ranks: ring roofline")
        return {True: "custom", False: "custom"}

    def _attention(self):
        s, kv_table_dtype = self.shapes, TABLE_DTYPE.get(self.kv_dtype, "")
        kv_bytes = dtype_bytes(self.kv_dtype)
        decode = prefill = None
        if self.tables.generation_attention is not None:
            try:
                decode = DecodeAttention(SlicePricer(self.tables.generation_attention, s.heads, s.kv_heads,
                                                     s.head_dim, kv_table_dtype, growth=1.0))
            except LookupError as exc:
                self.notes.append(f"decode attention: {exc}; roofline")
        if decode is None:
            decode = RooflineDecode(s, self.hardware, kv_bytes)
        if self.tables.context_attention is not None:
            try:
                prefill = PrefillAttention(SlicePricer(self.tables.context_attention, s.heads, s.kv_heads,
                                                       s.head_dim, kv_table_dtype, growth=2.0), decode)
            except LookupError as exc:
                self.notes.append(f"prefill attention: {exc}; roofline")
        if prefill is None:
            prefill = RooflinePrefill(s, self.hardware, kv_bytes)
        return decode, prefill

    def _ensure_dense(self, tokens: int) -> None:
        """Tabulate the per-token-count part of a step for 0..tokens (graph and eager steps)."""
        if self._dense[True] is not None and len(self._dense[True][0]) > tokens:
            return
        size = max(tokens + 1, 2 * (len(self._dense[True][0]) if self._dense[True] else 0))
        m = np.arange(1, size, dtype=np.float64)
        s = self.shapes
        layer, code = np.zeros_like(m), np.zeros(m.shape, np.int8)
        for g in s.layer_gemms:
            t, c = self.gemm.times(g.n, g.k, m, self.sol)
            layer, code = layer + t, np.maximum(code, c)
        layer += elementwise.seconds(elementwise.layer_kernels(s, dtype_bytes(self.kv_dtype)), m,
                                     self._bandwidth, self._floor)
        embed = elementwise.seconds([elementwise.embedding_kernel(s)], m, self._bandwidth, self._floor)
        for graph in (True, False):
            ar, ar_code = self.collectives.seconds("all_reduce", self._allreduce[graph], self.tp,
                                                   m * s.allreduce_bytes_per_token)
            total = s.num_layers * (layer + 2 * ar) + embed + (ar if self.tp > 1 else 0.0)
            self._dense[graph] = (np.concatenate([[0.0], total]),
                                  np.concatenate([[0], np.maximum(code, ar_code)]).astype(np.int8))

    def _ensure_head(self, rows: int) -> None:
        """Tabulate the LM head, logits gather and sampling for 0..rows sequences."""
        if self._head is not None and len(self._head[0]) > rows:
            return
        size = max(rows + 1, 2 * (len(self._head[0]) if self._head is not None else 0))
        m = np.arange(1, size, dtype=np.float64)
        head = self.shapes.lm_head
        t, code = self.gemm.times(head.n, head.k, m, self.sol)
        t = t + elementwise.seconds(elementwise.sampling_kernels(self.model.vocab_size), m, self._bandwidth,
                                    self._floor)
        if self.tp > 1:
            gather, g_code = self.collectives.seconds("all_gather", "nccl", self.tp,
                                                      m * self.model.vocab_size * ACTIVATION_BYTES)
            t, code = t + gather, np.maximum(code, g_code)
        self._head = (np.concatenate([[0.0], t]), np.concatenate([[0], code]).astype(np.int8))

    # --- composition -------------------------------------------------------------------------
    def _fixed(self, tokens: int, rows: int, graph: bool) -> float:
        self._ensure_dense(tokens)
        self._ensure_head(rows)
        return self._dense[graph][0][tokens] + self._head[0][rows]

    def _with_host(self, gpu, rows: int, graph: bool):
        oh = self.overhead
        if not graph:
            gpu = np.maximum(gpu, self._launches * oh.launch_s)
        cpu = oh.step_s + oh.per_sequence_s * rows
        return np.maximum(gpu, cpu) if oh.async_scheduling else gpu + cpu

    def _decode_fixed(self, rows: int) -> tuple:
        """For decode steps of `rows` rows: whether they run as a graph, their fixed GPU seconds
        (everything but attention), the eager launch floor and the host seconds (cached)."""
        hit = self._decode_fixed_cache.get(rows)
        if hit is None:
            graph = runs_as_graph(self.overhead, rows, rows, True)
            oh = self.overhead
            hit = self._decode_fixed_cache[rows] = (graph, self._fixed(rows, rows, graph), self._launches * oh.launch_s,
                                                    oh.step_s + oh.per_sequence_s * rows)
        return hit

    def _decode_steps(self, cached_grid: np.ndarray) -> np.ndarray:
        """Seconds of pure-decode steps, one per row of a (steps, rows) array of cached tokens
        (the arithmetic of `_with_host(_fixed(..) + attention)`, its constant parts cached)."""
        rows = cached_grid.shape[-1]
        graph, fixed, launch_floor, cpu = self._decode_fixed(rows)
        gpu = fixed + self.shapes.num_layers * self.decode.seconds(rows, cached_grid + 1.0)
        if not graph:
            gpu = np.maximum(gpu, launch_floor)
        return np.maximum(gpu, cpu) if self.overhead.async_scheduling else gpu + cpu

    @staticmethod
    def _active(new_tokens, cached_tokens):
        new = np.atleast_1d(np.asarray(new_tokens, dtype=np.float64))
        cached = np.atleast_1d(np.asarray(cached_tokens, dtype=np.float64))
        keep = new > 0
        return new[keep], cached[keep]

    # --- ExecutionModel ------------------------------------------------------------------------
    def _mixed(self, new: np.ndarray, cached: np.ndarray) -> tuple[float, Provenance]:
        """Seconds and provenance of a step with prefill rows (memoised: the replica asks for
        the time, whether it is extrapolated and where it came from)."""
        key = (new.tobytes(), cached.tobytes())
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        tokens, rows = int(new.sum()), new.size
        decode = new == 1
        graph = runs_as_graph(self.overhead, tokens, rows, False)
        gpu = self._fixed(tokens, rows, graph)
        code = max(self._dense[graph][1][tokens], self._head[1][rows])
        layers = self.shapes.num_layers
        if decode.any():
            kv = cached[decode] + 1.0
            gpu += layers * float(self.decode.seconds(int(decode.sum()), kv[None, :])[0])
            code = max(code, self.decode.provenance(int(decode.sum()), kv.min(), kv.max()))
        prefill_s, prefill_code = self.prefill.seconds(new[~decode], cached[~decode])
        result = float(self._with_host(gpu + layers * prefill_s, rows, graph)), Provenance(max(code, prefill_code))
        if len(self._memo) >= 64:  # replicas interleave their steps: keep the last few
            self._memo.pop(next(iter(self._memo)))
        self._memo[key] = result
        return result

    def step_time(self, new_tokens, cached_tokens) -> float:
        new = np.asarray(new_tokens)
        if new.size and _all_ones(new):  # a decode step, the common case
            return float(self._decode_steps(np.atleast_1d(np.asarray(cached_tokens, dtype=np.float64))[None, :])[0])
        new, cached = self._active(new_tokens, cached_tokens)
        if new.size == 0:
            return 0.0
        if (new == 1).all():
            return float(self._decode_steps(cached[None, :])[0])
        return self._mixed(new, cached)[0]

    def decode_run_times(self, cached_tokens, num_steps: int) -> np.ndarray:
        cached = np.atleast_1d(np.asarray(cached_tokens, dtype=np.float64))
        if num_steps * cached.size <= 1_000_000:  # one (steps, rows) grid
            return self._decode_steps(cached[None, :] + np.arange(num_steps, dtype=np.float64)[:, None])
        out = np.empty(num_steps)
        chunk = max(1, 1_000_000 // max(1, cached.size))  # bound the (steps, rows) grid
        for start in range(0, num_steps, chunk):
            steps = np.arange(start, min(start + chunk, num_steps), dtype=np.float64)[:, None]
            out[start : start + len(steps)] = self._decode_steps(cached[None, :] + steps)
        return out

    def _decode_codes(self, rows: int) -> tuple[Provenance, Provenance, float, float]:
        """For decode steps of `rows` rows: the provenance of their fixed part, of their attention
        inside its measured range, the shortest and the longest KV length of that range."""
        hit = self._decode_code_cache.get(rows)
        if hit is None:
            graph = runs_as_graph(self.overhead, rows, rows, True)
            self._ensure_dense(rows)
            self._ensure_head(rows)
            fixed = Provenance(max(self._dense[graph][1][rows], self._head[1][rows]))
            _, _, until, code = self.decode.segments(rows)
            hit = self._decode_code_cache[rows] = (fixed, Provenance(code), float(self.decode.knot_len[0]), until)
        return hit

    def run_sources(self, new_tokens, cached_tokens, num_steps: int = 1) -> tuple[Counter, bool]:
        """Provenance labels of `num_steps` steps (this one and, for a pure-decode step, the
        decode steps that follow it with one more cached token per row each), and whether the
        first of them is extrapolated: both from one look at the step."""
        new = np.asarray(new_tokens)
        if new.size and _all_ones(new):  # the common case, kept cheap
            cached = np.asarray(cached_tokens)
            fixed, attention, shortest, until = self._decode_codes(new.size)
            lo, hi = float(cached.min()) + 1.0, float(cached.max()) + 1.0
            reach = max(0, int(until - hi) + 1) if lo >= shortest else 0  # steps inside the measured range
            inside = min(num_steps, reach)
            base = max(fixed, attention)
            out = Counter()
            if inside:
                out[base.label] = inside
            beyond = max(base, Provenance.EXTRAPOLATED)
            if num_steps > inside:
                out[beyond.label] += num_steps - inside
            return out, (base if reach else beyond) is Provenance.EXTRAPOLATED
        new, cached = self._active(new_tokens, cached_tokens)
        if new.size == 0:
            return Counter(), False
        code = self._mixed(new, cached)[1]
        return Counter({code.label: num_steps}), code is Provenance.EXTRAPOLATED

    def step_sources(self, new_tokens, cached_tokens, num_steps: int = 1) -> Counter:
        """Provenance labels of `num_steps` steps: this one and, for a pure-decode step, the
        decode steps that follow it with one more cached token per row each."""
        return self.run_sources(new_tokens, cached_tokens, num_steps)[0]

    def is_extrapolated(self, new_tokens, cached_tokens) -> bool:
        return self.run_sources(new_tokens, cached_tokens)[1]

    # --- reporting ---------------------------------------------------------------------------
    def breakdown(self, new_tokens, cached_tokens) -> dict[str, float]:
        """Seconds per part of one step (GEMMs, element-wise, all-reduce, attention, LM head, host)."""
        new, cached = self._active(new_tokens, cached_tokens)
        s, tokens, rows = self.shapes, int(new.sum()), new.size
        graph = runs_as_graph(self.overhead, tokens, rows, bool((new == 1).all()))
        m = np.array([float(tokens)])
        out = {g.name: s.num_layers * float(self.gemm.times(g.n, g.k, m, self.sol)[0][0]) for g in s.layer_gemms}
        out["elementwise"] = s.num_layers * float(elementwise.seconds(
            elementwise.layer_kernels(s, dtype_bytes(self.kv_dtype)), m, self._bandwidth, self._floor)[0])
        ar = self.collectives.seconds("all_reduce", self._allreduce[graph], self.tp, m * s.allreduce_bytes_per_token)
        out["allreduce"] = float(s.allreduces_per_step * ar[0][0])
        decode = new == 1
        out["decode_attention"] = s.num_layers * float(
            self.decode.seconds(int(decode.sum()), cached[decode][None, :] + 1.0)[0]) if decode.any() else 0.0
        out["prefill_attention"] = s.num_layers * self.prefill.seconds(new[~decode], cached[~decode])[0]
        self._ensure_head(rows)
        out["lm_head_and_sampling"] = float(self._head[0][rows])
        out["total"] = self.step_time(new_tokens, cached_tokens)
        out["host_and_launch"] = out["total"] - sum(v for k, v in out.items() if k != "total")
        return out

    def describe(self) -> dict:
        slices = {
            "decode": self._slice_info(self.decode),
            "prefill": self._slice_info(self.prefill),
        }
        return {
            "provenance": self.provenance,
            "model": self.model.name,
            "hardware": self.hardware.name,
            "tp": self.tp,
            "weight_dtype": self.weight_dtype,
            "kv_dtype": self.kv_dtype,
            **table_origin(self.tables, self.where),
            "gemm_kernel": self.gemm.table.kernel,
            "attention": slices,
            "allreduce": self._allreduce[True],
            "host_overhead": self.overhead.describe(),
            "notes": list(self.notes),
        }

    @staticmethod
    def _slice_info(part) -> dict:
        pricer = getattr(part, "pricer", None)
        if pricer is None:
            return {"rule": "roofline"}
        return {"rule": Provenance(pricer.provenance).label, "batch_multiplier": pricer.multiplier,
                "slices": [f"{s.heads}/{s.kv_heads}x{s.head_dim} {s.kv_dtype} ({s.kernel})" for s in pricer.slices]}


def _all_ones(a: np.ndarray) -> bool:
    """Whether every entry of a non-empty integer array is 1 (a pure-decode step)."""
    return a.min() == 1 and a.max() == 1
