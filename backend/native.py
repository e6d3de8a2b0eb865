"""Native CPU kernels (`backend/csrc/cpu_kernels.c`), compiled for this machine on first use.

The C file is built with the system C compiler (`$CC`, else `cc`) and `-O3 -march=native
-fopenmp` into a cache folder (`$LLMSIM_CACHE_DIR`, else `$XDG_CACHE_HOME/llmsim` or
`~/.cache/llmsim`, or a per-user temporary folder when that is read-only), named by a hash of the source, the flags, the compiler's version and the
CPU's feature flags, so a changed file, compiler or processor gets its own build and a build is
never loaded on a CPU it was not made for. It is loaded with ctypes, which releases the GIL
during the call; its OpenMP threads come from the runtime torch already loaded (the same
`libgomp.so.1`), sized by `torch.get_num_threads()`.

Without a compiler, or with `LLMSIM_NATIVE_KERNELS=0`, nothing is built and every caller keeps
its torch path; `status()` says which and why.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

__all__ = [
    "HEAD_DIM_MULTIPLE",
    "MAX_ROWS",
    "STREAM_ROWS",
    "add_rms_norm",
    "available",
    "build",
    "library",
    "loaded",
    "paged_decode_attention",
    "rope_and_cache_",
    "silu_mul",
    "skinny_linear",
    "status",
]  # fmt: skip

SOURCE = Path(__file__).with_name("csrc") / "cpu_kernels.c"
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")
MAX_ROWS = 32  # skinny_matmul's input rows; must match MAX_ROWS in the C file
STREAM_ROWS = 4  # up to this many rows it reads the weights once at full bandwidth (STREAM_ROWS)
HEAD_DIM_MULTIPLE = 16  # paged_decode_attention works in vectors of 16 floats
_log = logging.getLogger(__name__)


class NativeBuildError(RuntimeError):
    """The kernels could not be compiled or loaded here."""


def cache_dir() -> Path:
    """$LLMSIM_CACHE_DIR, else the user's cache folder; a per-user temporary folder when that cannot
    be created (a read-only home on a CI runner)."""
    if os.environ.get("LLMSIM_CACHE_DIR"):
        return Path(os.environ["LLMSIM_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llmsim"
    try:
        base.mkdir(parents=True, exist_ok=True)
        if os.access(base, os.W_OK):
            return base
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / f"llmsim-{os.getuid()}"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def build(cache: Path, compiler: str) -> Path:
    """Compile the kernels into `cache` (once per source, flags, compiler and CPU) and return the
    library's path. Concurrent builders each compile to a temporary name and rename it into place."""
    if shutil.which(compiler) is None:
        raise NativeBuildError(f"no C compiler {compiler!r} on PATH (set CC to one)")
    try:
        version = subprocess.run(
            [compiler, "--version"], check=False, capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError) as err:
        raise NativeBuildError(f"{compiler} --version failed: {err}") from err
    key = hashlib.sha256(
        "\0".join([SOURCE.read_text(), " ".join(FLAGS), version, _cpu_flags()]).encode()
    ).hexdigest()[:16]
    target = cache / f"cpu_kernels-{key}.so"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".cpu_kernels-", suffix=".so", dir=cache)
    os.close(fd)
    try:
        done = subprocess.run(
            [compiler, *FLAGS, str(SOURCE), "-o", tmp],
            check=False,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise NativeBuildError(f"{compiler} failed: {done.stderr.strip()[-500:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


# C signatures: p a pointer, i int64_t, f float, n int (thread count); the first letter is the result.
_SIGNATURES = {
    "skinny_matmul_max_rows": "n",
    "skinny_matmul_stream_rows": "n",
    "skinny_matmul": "npppiiin",
    "paged_decode_attention": "npipppippiiiiiin",
    "add_rms_norm": "-ppppiifn",
    "rope_and_cache": "npiipppipppiiiin",
    "silu_mul": "-ppiin",
    "decode_layer": "npiipppppppifiiipppippipiippn",
}
_CTYPES = {"p": ctypes.c_void_p, "i": ctypes.c_int64, "f": ctypes.c_float, "n": ctypes.c_int, "-": None}


def _load(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    for name, signature in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype = _CTYPES[signature[0]]
        fn.argtypes = [_CTYPES[c] for c in signature[1:]]
    if (lib.skinny_matmul_max_rows(), lib.skinny_matmul_stream_rows()) != (MAX_ROWS, STREAM_ROWS):
        raise NativeBuildError(
            f"{path} handles up to {lib.skinny_matmul_max_rows()} rows (streaming up to "
            f"{lib.skinny_matmul_stream_rows()}), expected {MAX_ROWS} ({STREAM_ROWS})"
        )
    return lib


_status = "not loaded yet"


def check_code(code: int, kernel: str) -> None:
    """Turn a kernel's error code (see cpu_kernels.c) into an exception; nothing was written."""
    if code == -1:
        raise MemoryError(f"{kernel} could not allocate its buffers")
    if code == -2:
        raise ValueError(
            f"{kernel}: head_dim must be a multiple of {HEAD_DIM_MULTIPLE} and heads of kv_heads"
        )
    if code == -3:
        raise ValueError(f"{kernel}: a length, block id, slot or position is outside the cache or its tables")
    if code:
        raise RuntimeError(f"{kernel} returned {code}")


@functools.cache
def library() -> ctypes.CDLL | None:
    """The loaded kernels, or None (disabled, or they could not be built: see status())."""
    global _status
    if os.environ.get("LLMSIM_NATIVE_KERNELS", "1").strip().lower() in ("0", "false", "no", "off"):
        _status = "off: LLMSIM_NATIVE_KERNELS=0"
        return None
    compiler = os.environ.get("CC", "cc")
    try:
        path = build(cache_dir(), compiler)
        lib = _load(path)
    except (NativeBuildError, OSError) as err:
        _status = f"unavailable: {err}"
        _log.warning("native CPU kernels %s; using torch's kernels", _status)
        return None
    _status = f"on: {path.name} ({compiler} {' '.join(FLAGS[:3])})"
    return lib


def loaded() -> ctypes.CDLL:
    """The kernels, or NativeBuildError saying why they are not here."""
    lib = library()
    if lib is None:
        raise NativeBuildError(status())
    return lib


def available() -> bool:
    return library() is not None


def status() -> str:
    """One line: whether the native kernels are in use, and why not when they are not."""
    library()
    return _status


def skinny_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [M, K] @ weight[N, K]^T (+ bias) for 1 <= M <= MAX_ROWS, fp32 on CPU, weight contiguous."""
    lib = loaded()
    m, k = x.shape
    n = weight.shape[0]
    if weight.shape[1] != k:
        raise ValueError(f"x has {k} columns, weight has {weight.shape[1]}")
    x = x.contiguous()
    out = torch.empty(m, n, dtype=torch.float32)
    if lib.skinny_matmul(weight.data_ptr(), x.data_ptr(), out.data_ptr(), m, n, k, torch.get_num_threads()):
        raise ValueError(f"skinny_linear takes 1 to {MAX_ROWS} rows, got {m}")
    return out if bias is None else out.add_(bias)


def paged_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    lengths: torch.Tensor,
) -> torch.Tensor:
    """Single-token queries q [B, heads, head_dim] against their keys and values in one layer's
    paged cache (k_cache, v_cache [num_blocks, block_size, kv_heads, head_dim]); sequence b has
    lengths[b] keys in blocks block_tables[b]. fp32 on CPU. Returns [B, heads, head_dim]."""
    lib = loaded()
    b, heads, d = q.shape
    _, block_size, kv_heads, cache_d = k_cache.shape
    if cache_d != d or heads % kv_heads or v_cache.shape != k_cache.shape:
        raise ValueError(f"q {tuple(q.shape)} does not match the cache {tuple(k_cache.shape)}")
    if d % HEAD_DIM_MULTIPLE:
        raise ValueError(f"head_dim {d} is not a multiple of {HEAD_DIM_MULTIPLE}")
    if q.stride(2) != 1 or q.stride(1) != d:
        q = q.contiguous()
    if not (k_cache.is_contiguous() and v_cache.is_contiguous()):
        raise ValueError("the KV cache must be contiguous")
    tables = block_tables.to(torch.int64).contiguous()
    lengths = lengths.to(torch.int64).contiguous()
    out = torch.empty(b, heads, d, dtype=torch.float32)
    code = lib.paged_decode_attention(
        q.data_ptr(), q.stride(0), k_cache.data_ptr(), v_cache.data_ptr(), tables.data_ptr(), tables.shape[1],
        lengths.data_ptr(), out.data_ptr(), b, heads, kv_heads, d, block_size, k_cache.shape[0],
        torch.get_num_threads(),
    )  # fmt: skip
    check_code(code, "paged_decode_attention")
    return out


def add_rms_norm(
    residual: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor, eps: float
) -> torch.Tensor:
    """residual += delta (in place; skipped when delta is None), then return RMSNorm(residual) *
    weight. fp32 on CPU; residual [rows, dim] contiguous."""
    lib = loaded()
    if residual.dim() != 2 or not residual.is_contiguous():
        raise ValueError("residual must be a contiguous [rows, dim] tensor")
    rows, dim = residual.shape
    if weight.shape != (dim,):
        raise ValueError(f"weight {tuple(weight.shape)} does not match rows of {dim}")
    if delta is not None:
        if delta.shape != residual.shape:
            raise ValueError(f"delta {tuple(delta.shape)} does not match residual {tuple(residual.shape)}")
        delta = delta.contiguous()
    out = torch.empty_like(residual)
    lib.add_rms_norm(
        out.data_ptr(), residual.data_ptr(), None if delta is None else delta.data_ptr(),
        weight.contiguous().data_ptr(), rows, dim, eps, torch.get_num_threads(),
    )  # fmt: skip
    return out


def rope_and_cache_(
    qkv: torch.Tensor,
    heads: int,
    kv_heads: int,
    positions: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    slots: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
) -> None:
    """Rotate the q and k parts of qkv [tokens, (heads + 2 kv_heads) head_dim] in place (cos, sin:
    [max_positions, head_dim] tables, sign folded into sin) and store k and v of token t in cache
    slot slots[t] (k_cache, v_cache [..., kv_heads, head_dim], contiguous). fp32 on CPU."""
    lib = loaded()
    tokens, width = qkv.shape
    d = cos.shape[1]
    if qkv.stride(1) != 1 or width != (heads + 2 * kv_heads) * d or d % 2:
        raise ValueError(
            f"qkv {tuple(qkv.shape)} is not [tokens, ({heads} + 2 * {kv_heads}) * {d}] with unit stride"
        )
    if not (
        k_cache.is_contiguous() and v_cache.is_contiguous() and cos.is_contiguous() and sin.is_contiguous()
    ):
        raise ValueError("the cache and the rotary tables must be contiguous")
    positions, slots = positions.to(torch.int64).contiguous(), slots.to(torch.int64).contiguous()
    code = lib.rope_and_cache(
        qkv.data_ptr(), qkv.stride(0), tokens, positions.data_ptr(), cos.data_ptr(), sin.data_ptr(), cos.shape[0],
        slots.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), k_cache.numel() // (kv_heads * d), heads,
        kv_heads, d, torch.get_num_threads(),
    )  # fmt: skip
    check_code(code, "rope_and_cache")


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for gate_up [rows, 2n] holding [gate | up]; returns [rows, n]. fp32 on CPU."""
    lib = loaded()
    gate_up = gate_up.contiguous()
    rows, width = gate_up.shape
    out = torch.empty(rows, width // 2, dtype=torch.float32)
    lib.silu_mul(gate_up.data_ptr(), out.data_ptr(), rows, width // 2, torch.get_num_threads())
    return out
