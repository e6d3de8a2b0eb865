"""Kernel-table files: measured kernel times for one model on one GPU under one serving engine.

A file holds, for the per-rank shapes the model runs at tensor parallelism 1, 2, 4 and 8, the
kernel times a step is built from: GEMMs (by M = tokens, at each needed N x K), prefill and
decode attention (by batch and sequence length, per heads / KV heads / head dim / KV dtype),
collectives (by bytes and ranks, per implementation) and the constants of the bandwidth model
for element-wise kernels. A mixture-of-experts model's file adds its MoE layer (routed experts,
routing to dispatch included) by tokens entering the layer, per expert layout (ranks each expert
is split over x ranks the experts spread over) and expert dtype, with the routing the tokens were
drawn from, and a latent-attention model's its attention layer measured whole (projections and
kernel) by batch and KV length (decode) or prompt length (prefill); every family is optional. A YAML header says where the numbers came from (package, version,
system, engine and its version, licence, date). Numbers are stored compactly: each axis and each
table of times is one string of space-separated values (`nan` where nothing was measured), so a
file stays small and loads fast.

Times are microseconds in the file and seconds in memory.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from simulator.common.errors import ConfigError
from simulator.common.files import write_text_atomic
from simulator.common.schema_errors import format_validation_error

FORMAT = "llmsim-kernel-tables/1"
ENGINES = ("vllm", "sglang", "trtllm", "llmsim")  # llmsim: its own backend, measured by `llmsim profile --ops`


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def version_key(version: str) -> tuple:
    """Sortable key for versions such as 0.24.0, 1.3.0rc20, 0.5.6.post2 (a release sorts after its rcs)."""
    m = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?(.*)", str(version))
    if not m:
        return (-1, -1, -1, 0, 0)
    major, minor, patch, rest = int(m[1]), int(m[2]), int(m[3] or 0), m[4]
    rc = re.search(r"rc(\d+)", rest)
    post = re.search(r"post(\d+)", rest)
    return (major, minor, patch, 0 if rc else 1, int(rc[1]) if rc else int(post[1]) if post else 0)


def parse_numbers(text: str, what: str = "table") -> np.ndarray:
    """A space-separated string of numbers (`nan` allowed) as a float64 array."""
    try:
        return np.array(text.split(), dtype=np.float64)
    except ValueError:
        raise ConfigError(f"{what}: expected space-separated numbers, got {text[:60]!r}") from None


def format_numbers(values, digits: int = 5) -> str:
    """The inverse of `parse_numbers`: whole numbers exactly (axes), others to `digits` significant digits."""

    def one(v: float) -> str:
        if not np.isfinite(v):
            return "nan"
        if v == int(v) and abs(v) < 1e15:
            return str(int(v))
        return f"{v:.{digits}g}"

    return " ".join(one(v) for v in np.asarray(values, float))


class Source(_Strict):
    """What the numbers were made from."""

    package: str = Field(..., description="e.g. aiconfigurator-core")
    package_version: str
    licence: str
    system: str = Field(..., description="the package's name for the GPU system, e.g. h100_sxm")
    device: str = Field("", description="the GPU as the collector saw it")
    backend: str
    backend_version: str
    files: dict[str, str] = Field(default_factory=dict, description="family -> file and kernel it came from")
    converted_on: str = ""
    command: str = ""
    notes: list[str] = Field(default_factory=list)


class GemmSite(_Strict):
    """One measured GEMM shape: times over the shared M axis for an N x K weight."""

    n: int = Field(..., gt=0)
    k: int = Field(..., gt=0)
    us: str


class GemmTable(_Strict):
    dtype: str = Field(..., description="compute dtype of the GEMM: bf16 or fp8")
    kernel: str = ""
    m: str = Field(..., description="M axis (tokens), ascending")
    n_max: int = Field(..., gt=0, description="largest N measured in the source table")
    k_max: int = Field(..., gt=0, description="largest K measured in the source table")
    sites: list[GemmSite]


class AttentionSlice(_Strict):
    """One heads / KV heads / head dim / KV dtype: times on the batch x seq grid, batch-major."""

    heads: int = Field(..., gt=0)
    kv_heads: int = Field(..., gt=0)
    head_dim: int = Field(..., gt=0)
    kv_dtype: str
    kernel: str = ""
    us: str


class AttentionTable(_Strict):
    batch: str = Field(..., description="batch axis, ascending")
    seq: str = Field(..., description="sequence axis: prompt length (prefill) or KV length (decode)")
    slices: list[AttentionSlice]


class CollectiveCurve(_Strict):
    op: Literal["all_reduce", "all_gather"]
    implementation: str = Field(..., description="custom_graph, custom_eager or nccl")
    ranks: int = Field(..., ge=2)
    kernel: str = ""
    us: str


class CollectiveTable(_Strict):
    bytes: str = Field(..., description="message size axis in bytes, ascending")
    curves: list[CollectiveCurve]


class MoELayout(_Strict):
    """One expert layout: each expert split over `tp` ranks, the experts spread over `ep` ranks;
    times of one rank's MoE layer over the table's tokens axis."""

    tp: int = Field(..., ge=1, description="ranks each expert's width is split over (moe_tp)")
    ep: int = Field(..., ge=1, description="ranks the experts are spread over")
    kernel: str = ""
    us: str


class MoETable(_Strict):
    """One MoE layer shape in one expert dtype, measured at several layouts."""

    dtype: str = Field(..., description="the experts' dtype as llmsim names it: bf16, fp8, fp4, mxfp4")
    source_dtype: str = Field("", description="the quantisation as the source names it, e.g. fp8_block")
    hidden: int = Field(..., gt=0)
    inter: int = Field(..., gt=0, description="one expert's intermediate width, before any split")
    topk: int = Field(..., gt=0)
    experts: int = Field(..., gt=0)
    distribution: str = Field(..., description="routing the tokens were drawn from: balanced (equal tokens per "
                              "expert) or the source's power_law_<alpha>")
    tokens: str = Field(..., description="tokens entering the layer across its tp x ep ranks, ascending")
    layouts: list[MoELayout]

    @field_validator("layouts")
    @classmethod
    def _some_layouts(cls, value: list[MoELayout]) -> list[MoELayout]:
        if not value:
            raise ValueError("a MoE table needs at least one layout")
        seen = [(x.tp, x.ep) for x in value]
        if len(set(seen)) != len(seen):
            raise ValueError(f"layouts repeat a tp x ep pair: {seen}")
        return value


class MLAModuleTable(_Strict):
    """A multi-head latent attention layer measured whole (its projections and the attention
    kernel) on one rank: slices per query heads on the rank (KV heads 1, head dim = latent +
    rotary width) and KV dtype, on the batch x KV-length grid."""

    phase: Literal["generation", "context"] = Field(..., description="decode rows (KV length axis) or prefill "
                                                    "rows (prompt length axis)")
    gemm_dtype: str = Field(..., description="dtype of the module's projections: bf16 or fp8")
    source_gemm_dtype: str = ""
    table: AttentionTable


class ElementwiseModel(_Strict):
    """Norms, rotary, activation, residual adds, KV writes, sampling: no measured table exists, so
    time = bytes / (bandwidth x efficiency) + floor per kernel."""

    bandwidth_efficiency: float = Field(..., gt=0, le=1)
    floor_us: float = Field(..., ge=0)
    source: str = ""


class KernelTables(_Strict):
    format: Literal["llmsim-kernel-tables/1"] = FORMAT
    model: str = Field(..., description="catalog model name")
    hardware: str = Field(..., description="catalog hardware name")
    engine: str
    engine_version: str
    tensor_parallel: list[int] = Field(..., description="TP degrees whose shapes the file holds")
    source: Source
    gemm: list[GemmTable] = Field(default_factory=list)
    context_attention: AttentionTable | None = None
    generation_attention: AttentionTable | None = None
    collectives: CollectiveTable | None = None
    elementwise: ElementwiseModel
    moe: list[MoETable] = Field(default_factory=list, description="MoE layers, in order of preference per dtype")
    mla: list[MLAModuleTable] = Field(default_factory=list, description="latent-attention layers, measured whole")

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, value: str) -> str:
        if value not in ENGINES:
            raise ValueError(f"unknown engine {value!r}; allowed: {', '.join(ENGINES)}")
        return value

    def gemm_for(self, dtype: str) -> GemmTable | None:
        return next((g for g in self.gemm if g.dtype == dtype), None)

    @property
    def gemm_dtypes(self) -> list[str]:
        return [g.dtype for g in self.gemm]

    def moe_for(self, dtype: str) -> list[MoETable]:
        return [t for t in self.moe if t.dtype == dtype]

    @property
    def moe_dtypes(self) -> list[str]:
        return sorted({t.dtype for t in self.moe})

    def mla_for(self, gemm_dtype: str, phase: str = "generation") -> MLAModuleTable | None:
        return next((t for t in self.mla if t.gemm_dtype == gemm_dtype and t.phase == phase), None)

    @property
    def kv_dtypes(self) -> list[str]:
        table = self.generation_attention
        return sorted({s.kv_dtype for s in table.slices}) if table else []

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", exclude_none=True)
        for family in ("moe", "mla"):
            if not data.get(family):
                data.pop(family, None)  # a dense model's file stays as it was
        return yaml.safe_dump(data, sort_keys=False, width=100000)


def write_kernel_tables(tables: KernelTables, out: str | Path, header: str) -> Path:
    """Write `header` (comment lines naming the source) and the tables to `out`, atomically;
    refuse to replace a file that is not an llmsim kernel-table file."""
    out = Path(out)
    if out.exists():
        try:
            existing = yaml.safe_load(out.read_text())
        except yaml.YAMLError:
            existing = None
        if not isinstance(existing, dict) or existing.get("format") != FORMAT:
            raise ConfigError(f"--out {out}: exists and is not an llmsim kernel-table file; not replacing it")
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(out, header + tables.to_yaml())


def _loader():
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@cache
def _load_cached(path: str, mtime: float) -> KernelTables:
    text = Path(path).read_text()
    try:
        data = yaml.load(text, Loader=_loader())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a kernel-table file must be a mapping of keys to values")
    try:
        return KernelTables.model_validate(data)
    except ValidationError as exc:
        message = format_validation_error(exc, KernelTables, path)
        raise ConfigError(message.replace("invalid scenario", "invalid kernel-table file", 1)) from None


def load_kernel_tables(path: str | Path) -> KernelTables:
    """Parse and validate a kernel-table file (cached per path and modification time)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"kernel-table file not found: {path}")
    return _load_cached(str(path.resolve()), path.stat().st_mtime)
