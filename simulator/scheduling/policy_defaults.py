"""Scheduler settings a scenario leaves unset, filled in with its policy's defaults, in one place.

`SchedulerConfig` keeps an unset setting as None, so a scenario that names no value gets the
default of whichever policy it runs, also after a variant changes the policy (`compare --policy`
re-reads the scenario). `resolve` returns the settings a scheduler actually uses.

Every policy but `vllm` keeps the defaults llmsim always had (vLLM v0's): 256 seats, a 1%
admission watermark, no prefix caching, and a token budget of max(max_model_len, 2048) for
policies without chunked prefill. `vllm` is vLLM V1 (v0.33.0), whose defaults are:

- `max_num_batched_tokens` and `max_num_seqs`: what `vllm serve` picks for the device
  (vllm/engine/arg_utils.py `EngineArgs.get_batch_defaults`, OpenAI API server context):
  2048 tokens and 256 seats on GPUs under 70 GiB and on A100s; 8192 and 1024 on other GPUs of
  70 GiB or more (H100, H200); 16384 and 1024 from 160 GiB (B200, MI300X); 2048 x world size and
  128 x world size on CPUs. An unknown device gets the smallest GPU tier, as vLLM does when it
  cannot query the device.
- `enable_prefix_caching`: on (vllm/config/cache.py, arg_utils: on for decoder-only models).
- `watermark`: 0 (vllm/config/scheduler.py `SchedulerConfig.watermark`).
- `long_prefill_token_threshold`: 0, no cap; `scheduler_reserve_full_isl`: on;
  `async_scheduling`: on (vllm/config/vllm.py turns it on when nothing prevents it).
"""

from __future__ import annotations

from dataclasses import dataclass

V1 = "vllm"
GiB = 2**30

# What llmsim used before it modelled V1; every other policy keeps them.
LEGACY_DEFAULTS = {"max_num_seqs": 256, "watermark": 0.01, "enable_prefix_caching": False}
V1_DEFAULTS = {
    "watermark": 0.0,
    "enable_prefix_caching": True,
    "long_prefill_token_threshold": 0,
    "scheduler_reserve_full_isl": True,
    "async_scheduling": True,
}
V1_ONLY = ("long_prefill_token_threshold", "scheduler_reserve_full_isl", "async_scheduling")


@dataclass(frozen=True)
class DeviceClass:
    """What vLLM's default batch sizes depend on: the device's name, memory and kind."""

    name: str = ""
    memory_gib: float = 0.0  # total device memory; 0 when unknown
    is_cpu: bool = False
    world_size: int = 1  # tensor x pipeline parallel GPUs (CPU defaults scale with it)


def serving_batch_defaults(device: DeviceClass | None) -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) that vLLM V1's API server uses on `device`."""
    device = device or DeviceClass()
    if device.is_cpu:
        return 2048 * device.world_size, 128 * device.world_size
    if device.memory_gib >= 160:
        return 16384, 1024
    if device.memory_gib >= 70 and "a100" not in device.name.lower():
        return 8192, 1024
    return 2048, 256


def policy_setting_errors(config) -> list[str]:
    """Settings that the config's policy cannot honour, each naming the field and what is allowed."""
    errors = []
    if config.policy == V1:
        if config.preemption_mode == "swap":
            errors.append(
                "preemption_mode: 'swap' is not available with policy 'vllm' (vLLM V1 preempts by "
                "recompute only); allowed: recompute, or policy 'vllm-v0' for swapping"
            )
        return errors
    for name in V1_ONLY:
        if getattr(config, name) is not None:
            errors.append(
                f"{name}: got {getattr(config, name)!r} with policy {config.policy!r}; it is a setting of "
                "policy 'vllm' (vLLM V1) only: leave it unset"
            )
    return errors


def resolve(config, device: DeviceClass | None = None):
    """`config` with every unset setting replaced by its policy's default on `device`."""
    if config.policy == V1:
        tokens, seqs = serving_batch_defaults(device)
        defaults = V1_DEFAULTS | {"max_num_batched_tokens": tokens, "max_num_seqs": seqs}
    else:
        defaults = LEGACY_DEFAULTS
    updates = {k: v for k, v in defaults.items() if getattr(config, k) is None}
    return config.model_copy(update=updates) if updates else config
