"""Model and hardware specifications: numbers from the YAML catalogs, quantities derived from them.

Only primary numbers are typed into the catalogs (layer counts, widths, peak FLOP/s, bandwidth,
prices); everything else (parameter counts, weight bytes, FLOPs and KV bytes per token) is computed
here, so a catalog entry cannot contradict itself.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

import yaml

from simulator.errors import ConfigError

# Bytes per element of each storage dtype the simulator knows.
DTYPE_BYTES: dict[str, float] = {
    "fp32": 4.0,
    "fp16": 2.0,
    "bf16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": 0.5,
}

GB = 1e9
GiB = 2**30


def dtype_bytes(dtype: str) -> float:
    try:
        return DTYPE_BYTES[dtype]
    except KeyError:
        raise ConfigError(f"unknown dtype {dtype!r}; allowed: {', '.join(DTYPE_BYTES)}") from None


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer of the Llama family (GQA attention, gated MLP)."""

    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    max_context: int
    head_dim: int = 0  # 0 means hidden_size // num_heads
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    tie_embeddings: bool = False
    attention_bias: bool = False  # Qwen2 puts biases on the q, k and v projections
    source: str = ""

    def __post_init__(self):
        if self.head_dim == 0:
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"model {self.name!r}: num_heads ({self.num_heads}) must be a multiple of "
                f"num_kv_heads ({self.num_kv_heads})"
            )

    # --- parameter counts -------------------------------------------------------------------
    @property
    def attention_params_per_layer(self) -> int:
        q = self.hidden_size * self.num_heads * self.head_dim
        kv = 2 * self.hidden_size * self.num_kv_heads * self.head_dim
        o = self.num_heads * self.head_dim * self.hidden_size
        bias = (self.num_heads + 2 * self.num_kv_heads) * self.head_dim if self.attention_bias else 0
        return q + kv + o + bias

    @property
    def mlp_params_per_layer(self) -> int:
        return 3 * self.hidden_size * self.intermediate_size  # gate, up, down

    @property
    def linear_params_per_layer(self) -> int:
        return self.attention_params_per_layer + self.mlp_params_per_layer

    @property
    def norm_params(self) -> int:
        return (2 * self.num_layers + 1) * self.hidden_size

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def num_params(self) -> int:
        """Total parameters as a checkpoint counts them (a tied LM head counted once)."""
        head = 0 if self.tie_embeddings else self.lm_head_params
        return self.embedding_params + self.num_layers * self.linear_params_per_layer + self.norm_params + head

    @property
    def layer_linear_params(self) -> int:
        """Parameters every token multiplies through in the transformer layers."""
        return self.num_layers * self.linear_params_per_layer

    # --- bytes and FLOPs --------------------------------------------------------------------
    def weight_bytes(self, dtype: str = "fp16") -> float:
        """Bytes of all weights when linear layers are stored in `dtype`.

        Embeddings and norms stay in 16 bits, as quantised checkpoints keep them; the LM head is
        quantised with the other linear layers unless it is tied to the embedding.
        """
        linear = self.layer_linear_params + (0 if self.tie_embeddings else self.lm_head_params)
        high = self.embedding_params + self.norm_params
        return linear * dtype_bytes(dtype) + high * 2.0

    def streamed_weight_bytes(self, dtype: str = "fp16") -> float:
        """Bytes one forward pass reads: layer weights plus the LM head (embeddings are gathered)."""
        head_bytes = dtype_bytes("fp16") if self.tie_embeddings else dtype_bytes(dtype)
        return self.layer_linear_params * dtype_bytes(dtype) + self.lm_head_params * head_bytes

    def kv_bytes_per_token(self, dtype: str = "fp16") -> float:
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * dtype_bytes(dtype)

    def linear_flops_per_token(self) -> float:
        """Multiply-adds of the layers' linear projections, counted as 2 FLOPs each."""
        return 2.0 * self.layer_linear_params

    def lm_head_flops_per_token(self) -> float:
        return 2.0 * self.lm_head_params

    def attention_flops(self, query_tokens, context_tokens):
        """FLOPs of QK^T and PV for `query_tokens` attending to `context_tokens` keys each (on average)."""
        return 4.0 * self.num_layers * self.num_heads * self.head_dim * query_tokens * context_tokens

    def flops_per_token(self, context: int = 0) -> float:
        """Forward FLOPs for one token at a given context length (linear + attention + LM head)."""
        return self.linear_flops_per_token() + self.lm_head_flops_per_token() + self.attention_flops(1, context)


@dataclass(frozen=True)
class HardwareSpec:
    """One accelerator: peak dense FLOP/s per dtype, memory, links and price."""

    name: str
    memory_bytes: float
    memory_bandwidth: float  # bytes/s
    flops: dict[str, float]  # dense peak FLOP/s (or OP/s) per compute dtype
    interconnect_bandwidth: float  # bytes/s per direction, between GPUs of one node
    interconnect_latency: float = 5e-6  # seconds per collective hop
    host_link_bandwidth: float = 25e9  # bytes/s to host memory (PCIe), used for swapping
    price_per_hour: float = 0.0  # on-demand USD per GPU-hour
    source: str = ""
    extra: dict = field(default_factory=dict)

    def peak_flops(self, compute_dtype: str) -> float:
        """Peak FLOP/s for a compute dtype, falling back to 16-bit where the chip lacks a faster path."""
        if compute_dtype in self.flops:
            return self.flops[compute_dtype]
        if compute_dtype in ("fp16", "bf16"):
            return self.flops.get("fp16") or self.flops["bf16"]
        # No native fp8/int8 units: such kernels run at 16-bit speed.
        return self.peak_flops("fp16")


def compute_dtype_for(weight_dtype: str) -> str:
    """The matmul dtype a deployment runs at for given weights.

    fp8 weights run as W8A8 on fp8 tensor cores (as vLLM serves fp8 checkpoints); int8 and int4
    are weight-only schemes (AWQ, GPTQ, bitsandbytes) that dequantise to 16 bits for the matmul.
    """
    return {"fp8": "fp8", "fp32": "fp32"}.get(weight_dtype, "fp16")


# ----------------------------------------------------------------------------- catalogs ---
def _suggest(name: str, known) -> str:
    close = difflib.get_close_matches(name.lower(), list(known), n=3, cutoff=0.4)
    return f"; did you mean {', '.join(close)}?" if close else ""


@cache
def _load_catalog(filename: str) -> dict[str, dict]:
    text = resources.files("simulator.catalog").joinpath(filename).read_text()
    return yaml.safe_load(text)


def model_names() -> list[str]:
    return sorted(_load_catalog("models.yaml"))


def hardware_names() -> list[str]:
    return sorted(_load_catalog("hardware.yaml"))


def model_from_dict(name: str, data: dict) -> ModelSpec:
    try:
        return ModelSpec(name=name, **data)
    except TypeError as exc:
        raise ConfigError(f"model {name!r}: {exc}") from None


def hardware_from_dict(name: str, data: dict) -> HardwareSpec:
    data = dict(data)
    try:
        return HardwareSpec(
            name=name,
            memory_bytes=data.pop("memory_gib") * GiB,
            memory_bandwidth=data.pop("memory_bandwidth_gbps") * GB,
            flops={k: v * 1e12 for k, v in data.pop("tflops").items()},
            interconnect_bandwidth=data.pop("interconnect_gbps") * GB,
            interconnect_latency=data.pop("interconnect_latency_us", 5.0) * 1e-6,
            host_link_bandwidth=data.pop("host_link_gbps", 25.0) * GB,
            price_per_hour=data.pop("price_per_hour", 0.0),
            source=data.pop("source", ""),
            extra=data,
        )
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"hardware {name!r}: missing or bad field {exc}") from None


def get_model(name: str) -> ModelSpec:
    catalog = _load_catalog("models.yaml")
    key = name.lower()
    if key not in catalog:
        raise ConfigError(f"unknown model {name!r}{_suggest(key, catalog)} (known: {', '.join(sorted(catalog))})")
    return model_from_dict(key, catalog[key])


def get_hardware(name: str) -> HardwareSpec:
    catalog = _load_catalog("hardware.yaml")
    key = name.lower()
    if key not in catalog:
        raise ConfigError(
            f"unknown hardware {name!r}{_suggest(key, catalog)} (known: {', '.join(sorted(catalog))})"
        )
    return hardware_from_dict(key, catalog[key])
