"""The model and its paged KV cache on one device, executing the scheduler's steps.

`ModelRunner.execute(step)` is the single place where a step runs: it turns the scheduler's Step
into the model's flattened batch, runs the forward pass, samples a token for every row that
reaches the end of its known tokens, and waits for the device before returning, so timing a call
times the step. The engine calls it; so does the profiler.
"""

from __future__ import annotations

from collections.abc import Sequence as SequenceOf

import torch

from backend import native
from backend.cpu_allocator import keep_large_buffers_in_heap
from backend.device import dtype_name, resolve_device, resolve_dtype
from backend.model import Llama, StepBatch, build_model
from backend.quant import quantize_int8, weight_bytes
from backend.sampling import GREEDY, SamplingParams, sample
from simulator.common.errors import ConfigError
from simulator.scheduling import Sequence, Step
from simulator.spec import ModelSpec, get_model

QUANTIZATIONS = (None, "int8")
DEFAULT_CPU_KV_GB = 1.0
CUDA_KV_FRACTION = 0.8  # of the device memory free once the weights are loaded


def token_slice(seq: Sequence, start: int, end: int) -> list[int]:
    """Token ids at positions [start, end) of prompt + output, without concatenating the whole.

    Sequences made without token ids (synthetic profiling requests) get filler ids, different
    for every sequence: a dense step's time does not depend on which tokens run, but a mixture
    of experts routes identical rows to the same experts, which would make a batch cheaper."""
    prompt = seq.prompt_token_ids
    if prompt is None:
        return [(pos * 7919 + seq.seq_id * 104729) % 1000 for pos in range(start, end)]
    p, out = len(prompt), seq.output_token_ids
    if end <= p:
        return prompt[start:end]
    if len(out) < end - p:  # outputs counted but not recorded (simulated sequences)
        out = out + [0] * (end - p - len(out))
    if start >= p:
        return out[start - p : end - p]
    return prompt[start:] + out[: end - p]


class ModelRunner:
    """Owns the model (random weights from a spec, or a model given ready-made) and the KV cache.

    num_blocks: KV-cache blocks; by default as many as `kv_cache_gb` holds (CPU: 1 GiB; CUDA:
    80% of the memory free once the weights are loaded).
    """

    def __init__(
        self,
        model: ModelSpec | Llama | str,
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "fp32",
        quantization: str | None = None,
        num_blocks: int | None = None,
        kv_cache_gb: float | None = None,
        block_size: int = 16,
        seed: int = 0,
    ):
        if quantization not in QUANTIZATIONS:
            raise ConfigError(f"quantization: got {quantization!r}; allowed: none, int8")
        if isinstance(model, Llama):
            self.model = model
        else:
            spec = get_model(model) if isinstance(model, str) else model
            self.model = build_model(spec, seed, resolve_dtype(dtype), resolve_device(device))
        if quantization == "int8" and self.model.spec.is_moe:
            raise ConfigError(
                f"quantization: int8 is not supported for mixture-of-experts models ({self.model.spec.name}); "
                "allowed: none"
            )
        if quantization == "int8":
            quantize_int8(self.model)
        self.quantization = quantization
        self.spec: ModelSpec = self.model.spec
        self.device: torch.device = self.model.device
        self.dtype: torch.dtype = self.model.dtype
        if self.device.type == "cpu":
            keep_large_buffers_in_heap()
            native.library()  # compiled (once per machine) now rather than inside the first step
        self.block_size = block_size
        if num_blocks is None:
            num_blocks = self._blocks_for_budget(kv_cache_gb)
        if num_blocks <= 0:
            raise ConfigError(f"num_blocks: got {num_blocks}; allowed: a positive number of KV blocks")
        self.kv = self.model.make_kv_cache(num_blocks, block_size)
        self._host_kv: tuple[torch.Tensor, torch.Tensor] | None = None

    # --- sizes ------------------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return self.kv.num_blocks

    @property
    def kv_bytes_per_token(self) -> int:
        return self.kv.bytes_per_token

    @property
    def weight_bytes(self) -> int:
        """Bytes of all weights (int8 linear layers count their int8 data and scales)."""
        return weight_bytes(self.model)

    @property
    def streamed_weight_bytes(self) -> int:
        """Bytes a decode step reads from weights: every linear layer and the LM head (one
        embedding row per token is negligible). Routed experts are not linear layers: a step
        reads `expert_weight_bytes` per distinct expert it touches in each MoE layer."""
        linear = weight_bytes(self.model, linear_only=True)
        if self.spec.tie_embeddings:
            linear += self.model.embed_tokens.weight.nbytes
        return linear

    @property
    def expert_weight_bytes(self) -> int:
        """Bytes of one routed expert in one MoE layer (0 for a dense model): what a step reads
        per distinct expert its tokens touch there."""
        layers = self.model.moe_layers
        if not layers:
            return 0
        return layers[0].w_gate_up[0].nbytes + layers[0].w_down[0].nbytes

    @property
    def native_kernels(self) -> bool:
        """Whether steps run the native CPU kernels (fp32 on CPU, when they could be built)."""
        return self.device.type == "cpu" and self.dtype == torch.float32 and native.available()

    @property
    def matvec_max_tokens(self) -> int:
        """Steps of at most this many new tokens run matrix-vector kernels, bound by reading the weights."""
        return native.STREAM_ROWS if self.native_kernels else 1

    @property
    def small_matmul_max_tokens(self) -> int:
        """Steps of at most this many new tokens run the native small-matrix kernels (0: none)."""
        return native.MAX_ROWS if self.native_kernels else 0

    def _blocks_for_budget(self, kv_cache_gb: float | None) -> int:
        if kv_cache_gb is not None and kv_cache_gb <= 0:
            raise ConfigError(f"kv_cache_gb: got {kv_cache_gb}; allowed: a positive number of GiB")
        if kv_cache_gb is None:
            if self.device.type == "cuda":
                free, _ = torch.cuda.mem_get_info(self.device)
                budget = free * CUDA_KV_FRACTION
            else:
                budget = DEFAULT_CPU_KV_GB * 2**30
        else:
            budget = kv_cache_gb * 2**30
        per_block = self.spec.kv_bytes_per_token(dtype_name(self.dtype)) * self.block_size
        return int(budget // per_block)

    # --- one step ---------------------------------------------------------------------------
    def execute(self, step: Step, sampling: SequenceOf[SamplingParams] | None = None) -> list[int | None]:
        """Run `step` and return one entry per row: the sampled token of rows that reach the end
        of their known tokens, None for prefill chunks that stop short of it.

        sampling: one SamplingParams per row (default: greedy for all).
        """
        self._swap(step)
        if not step.seqs:
            return []
        token_ids, sampled_rows = [], []
        for i, (seq, new, cached) in enumerate(zip(step.seqs, step.new_tokens, step.cached_tokens)):
            token_ids.append(token_slice(seq, cached, cached + new))
            if cached + new >= seq.num_tokens:
                sampled_rows.append(i)
        batch = StepBatch(token_ids, list(step.cached_tokens), [seq.block_table for seq in step.seqs])
        logits = self.model(batch, self.kv)
        out: list[int | None] = [None] * len(step.seqs)
        if sampled_rows:
            params = [GREEDY if sampling is None else sampling[i] for i in sampled_rows]
            counters = [step.seqs[i].num_output for i in sampled_rows]
            rows = logits if len(sampled_rows) == len(out) else logits[sampled_rows]
            for i, token in zip(sampled_rows, sample(rows, params, counters)):
                out[i] = token
        elif self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return out  # sampling moved the tokens to the host, which waited for the device

    # --- KV swapping ------------------------------------------------------------------------
    def allocate_host_cache(self, num_blocks: int) -> None:
        """Host memory for KV blocks preempted by swapping (pinned when the device is a GPU)."""
        shape = (self.kv.num_layers, num_blocks, *self.kv.k.shape[2:])
        pin = self.device.type == "cuda"
        self._host_kv = (
            torch.zeros(shape, dtype=self.dtype, pin_memory=pin),
            torch.zeros(shape, dtype=self.dtype, pin_memory=pin),
        )

    def _swap(self, step: Step) -> None:
        """Copy the blocks a step swaps out to host memory, then the ones it swaps in back (a
        block freed by a swap-out may be the destination of a swap-in)."""
        if not (step.swap_out_blocks or step.swap_in_blocks):
            return
        if self._host_kv is None:
            raise RuntimeError("the step swaps KV blocks but no host cache was allocated")
        host_k, host_v = self._host_kv
        for src, dst in step.swap_out_blocks:
            host_k[:, dst].copy_(self.kv.k[:, src])
            host_v[:, dst].copy_(self.kv.v[:, src])
        for src, dst in step.swap_in_blocks:
            self.kv.k[:, dst].copy_(host_k[:, src])
            self.kv.v[:, dst].copy_(host_v[:, src])
