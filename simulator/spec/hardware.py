"""An accelerator as numbers: peak FLOP/s per dtype, memory, bandwidth, links and price."""

from __future__ import annotations

from dataclasses import dataclass, field

from simulator.common.errors import ConfigError


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
    # Between nodes, per GPU per direction: one 400 Gb/s InfiniBand NDR NIC per GPU, as in the
    # 8-GPU DGX/HGX H100, H200 and B200 reference nodes (8 x ConnectX-7). Pipeline stages and
    # rank groups wider than one node cross it.
    internode_bandwidth: float = 50e9
    gpus_per_node: int = 8
    price_per_hour: float = 0.0  # on-demand USD per GPU-hour
    source: str = ""
    extra: dict = field(default_factory=dict)

    def peak_flops(self, compute_dtype: str) -> float:
        """Peak FLOP/s for a compute dtype, falling back to 16-bit where the chip lacks a faster path."""
        if compute_dtype in self.flops:
            return self.flops[compute_dtype]
        if compute_dtype in ("fp16", "bf16"):
            if "fp16" not in self.flops and "bf16" not in self.flops:
                raise ConfigError(
                    f"hardware {self.name!r} gives no fp16 or bf16 rate (tflops: {', '.join(self.flops)}), "
                    f"which {compute_dtype} steps need; add tflops.fp16"
                )
            return self.flops.get("fp16") or self.flops["bf16"]
        # No native fp8/int8 units: such kernels run at 16-bit speed.
        return self.peak_flops("fp16")
