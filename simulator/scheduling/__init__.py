"""Batching policies and the KV block manager: plain Python, shared by simulator and engine.

`POLICIES` holds the built-in policies by name; `policy_class` also finds policies of installed
packages (entry points `llmsim.policies`) and classes named `module:Class` (plugins.py).
"""

from simulator.common.errors import ConfigError, unknown_choice
from simulator.scheduling import plugins
from simulator.scheduling.base import Scheduler
from simulator.scheduling.block_hash import token_block_hashes
from simulator.scheduling.config import SchedulerConfig
from simulator.scheduling.kv_blocks import BlockManager
from simulator.scheduling.orca import OrcaScheduler
from simulator.scheduling.ordered import EarliestDeadlineFirstScheduler, ShortestPromptFirstScheduler
from simulator.scheduling.policy_defaults import DeviceClass, resolve
from simulator.scheduling.prefix_cache import PrefixCachingBlockManager
from simulator.scheduling.priority import PriorityScheduler
from simulator.scheduling.sarathi import SarathiScheduler
from simulator.scheduling.sequence import SeqStatus, Sequence
from simulator.scheduling.speculative import SpeculativeConfig
from simulator.scheduling.static import StaticBatchScheduler
from simulator.scheduling.step import Step
from simulator.scheduling.v1_prefix_cache import V1PrefixCache
from simulator.scheduling.vllm import VLLMScheduler
from simulator.scheduling.vllm_v1 import VLLMV1Scheduler

POLICIES: dict[str, type[Scheduler]] = {
    cls.name: cls
    for cls in (
        VLLMV1Scheduler,
        VLLMScheduler,
        StaticBatchScheduler,
        OrcaScheduler,
        SarathiScheduler,
        PriorityScheduler,
        ShortestPromptFirstScheduler,
        EarliestDeadlineFirstScheduler,
    )
}


def find_policy(name: str) -> type[Scheduler]:
    """The policy class of a built-in name, an entry-point name, or `module:Class`."""
    if name in POLICIES:
        return POLICIES[name]
    if name in plugins.registered_names() or plugins.is_qualified(name):
        return plugins.load(name, Scheduler)
    known = {**POLICIES, **dict.fromkeys(plugins.registered_names())}
    raise ConfigError(unknown_choice("policy", name, known) + "; or your own class as module:Class "
                      "(docs/policies.md)")


def policy_class(config: SchedulerConfig) -> type[Scheduler]:
    try:
        return find_policy(config.policy)
    except ConfigError as exc:
        raise ConfigError(f"scheduler.policy: {exc}") from None


def make_block_manager(
    config: SchedulerConfig, num_blocks: int, hash_block_tokens: int | None = None
) -> BlockManager:
    """The KV block manager `config` asks for (its policy's prefix cache, or plain blocks), with
    the policy's defaults for what `config` leaves unset. `hash_block_tokens`: tokens named by each
    of a sequence's `block_hashes` (simulated workloads that carry them)."""
    cls = policy_class(config)
    config = resolve(config)  # the block settings' defaults do not depend on the device
    if config.enable_prefix_caching:
        return cls.prefix_cache(num_blocks, config.block_size, config.watermark, hash_block_tokens)
    return BlockManager(num_blocks, config.block_size, config.watermark)


def make_scheduler(
    config: SchedulerConfig,
    blocks: BlockManager,
    max_model_len: int,
    num_host_blocks: int = 0,
    device: DeviceClass | None = None,
) -> Scheduler:
    """The policy `config` names. `num_host_blocks`: host swap space, in KV blocks (used when
    preemption_mode is swap). `device`: what the policy's default batch sizes depend on (vLLM V1's
    do; None: vLLM's defaults for a device it cannot query)."""
    return policy_class(config)(config, blocks, max_model_len, num_host_blocks, device)


__all__ = [
    "POLICIES",
    "BlockManager",
    "DeviceClass",
    "PrefixCachingBlockManager",
    "Scheduler",
    "SchedulerConfig",
    "SeqStatus",
    "Sequence",
    "SpeculativeConfig",
    "Step",
    "V1PrefixCache",
    "find_policy",
    "make_block_manager",
    "make_scheduler",
    "resolve",
    "token_block_hashes",
]
