"""Host overhead: what a step costs besides its GPU kernels, by serving engine and mode.

    cpu  = step_s + per_sequence_s x rows                      (schedule, prepare inputs, sample, output)
    gpu  = sum of kernel times                                  (a step replayed as CUDA graphs)
         = max(sum of kernel times, launches x launch_s)        (eager: the GPU waits for the host to
                                                                 issue kernels shorter than their launch)
    step = cpu + gpu                                            (synchronous scheduling)
         = max(cpu, gpu)                                        (asynchronous: the host prepares the next
                                                                 step while the GPU runs this one)

A step runs as CUDA graphs when graphs are on and it is small enough to have been captured:
vLLM captures by token count (any mix of prefill and decode), SGLang and TensorRT-LLM capture
decode-only batches by sequence count. Larger steps run eagerly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal

# Kernels one layer launches in eager mode (vLLM's Llama layer: fused add+RMSNorm, QKV GEMM,
# rotary, KV-cache write, attention, O GEMM, fused add+RMSNorm, gate/up GEMM, SiLU-and-mul, down
# GEMM); plus one per all-reduce with tensor parallelism.
EAGER_KERNELS_PER_LAYER = 10

LAUNCH_SOURCE = (
    "eager launch cost 14 us per kernel: gpt-fast (PyTorch blog 'Accelerating Generative AI with "
    "PyTorch II: GPT, Fast', 2023) decodes Llama-2-7B on A100-80GB at 25.5 tokens/s in eager mode "
    "and 107 with CUDA graphs and fused kernels, (1/25.5 - 1/107) s over 32 layers of about 65 "
    "PyTorch ops each"
)
CPU_SOURCE = (
    "assumption: 0.5 ms + 10 us per sequence of scheduling, input preparation and sampling per "
    "step (llmsim's roofline default; no published per-step figure for this engine version)"
)


@dataclass(frozen=True)
class HostOverhead:
    step_s: float = 5e-4
    per_sequence_s: float = 1e-5
    launch_s: float = 14e-6
    cuda_graphs: bool = True
    graph_max: int = 512  # largest captured step: tokens (vLLM) or decode sequences (others)
    graph_counts: Literal["tokens", "decode_sequences"] = "tokens"
    async_scheduling: bool = False
    source: str = ""

    def describe(self) -> dict:
        return asdict(self)


DEFAULTS: dict[str, HostOverhead] = {
    # vLLM V1: piecewise CUDA graphs for steps up to 512 tokens (CompilationConfig's default
    # capture sizes); scheduling overlaps the GPU only with --async-scheduling (off by default).
    "vllm": HostOverhead(
        source=f"{CPU_SOURCE}; graphs up to 512 tokens (vLLM's default capture sizes), synchronous "
        f"scheduling (vLLM's default); {LAUNCH_SOURCE}",
    ),
    # SGLang: decode batches up to cuda_graph_max_bs are graphs (160 on 80 GB GPUs by SGLang's
    # server defaults), prefill runs eagerly; the overlap scheduler (on by default since v0.4)
    # prepares the next batch while the GPU runs.
    "sglang": HostOverhead(
        graph_max=160,
        graph_counts="decode_sequences",
        async_scheduling=True,
        source=f"{CPU_SOURCE}; decode graphs up to 160 sequences and the overlap scheduler (SGLang "
        f"server defaults); {LAUNCH_SOURCE}",
    ),
    # TensorRT-LLM (PyTorch flow): decode batches are CUDA graphs, the overlap scheduler is on.
    "trtllm": HostOverhead(
        graph_max=128,
        graph_counts="decode_sequences",
        async_scheduling=True,
        source=f"{CPU_SOURCE}; decode graphs up to 128 sequences and the overlap scheduler "
        f"(TensorRT-LLM PyTorch-flow defaults); {LAUNCH_SOURCE}",
    ),
    # llmsim's own backend (kernel tables from `llmsim profile --ops`): eager torch ops, no CUDA
    # graphs, the step scheduled before it runs and completed after.
    "llmsim": HostOverhead(
        cuda_graphs=False,
        source=f"{CPU_SOURCE}; eager (llmsim's backend captures no CUDA graphs), synchronous scheduling; "
        f"{LAUNCH_SOURCE}",
    ),
}


def host_overhead_for(engine: str, overrides: dict | None = None) -> HostOverhead:
    """The engine's defaults with a scenario's overrides (fields of HostOverhead)."""
    base = DEFAULTS[engine]
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if overrides:
        base = replace(base, **overrides, source=base.source + "; overridden by the scenario: " + ", ".join(overrides))
    return base


def runs_as_graph(oh: HostOverhead, tokens: int, rows: int, decode_only: bool) -> bool:
    if not oh.cuda_graphs:
        return False
    if oh.graph_counts == "tokens":
        return tokens <= oh.graph_max
    return decode_only and rows <= oh.graph_max
