"""Batching policies and the KV block manager: plain Python, shared by simulator and engine."""

from simulator.common.errors import ConfigError, unknown_choice
from simulator.scheduling.base import Scheduler, Step
from simulator.scheduling.config import SchedulerConfig
from simulator.scheduling.kv_blocks import BlockManager
from simulator.scheduling.orca import OrcaScheduler
from simulator.scheduling.ordered import EarliestDeadlineFirstScheduler, ShortestPromptFirstScheduler
from simulator.scheduling.prefix_cache import PrefixCachingBlockManager
from simulator.scheduling.priority import PriorityScheduler
from simulator.scheduling.sarathi import SarathiScheduler
from simulator.scheduling.sequence import SeqStatus, Sequence
from simulator.scheduling.speculative import SpeculativeConfig
from simulator.scheduling.static import StaticBatchScheduler
from simulator.scheduling.vllm import VLLMScheduler

POLICIES: dict[str, type[Scheduler]] = {
    cls.name: cls
    for cls in (
        VLLMScheduler,
        StaticBatchScheduler,
        OrcaScheduler,
        SarathiScheduler,
        PriorityScheduler,
        ShortestPromptFirstScheduler,
        EarliestDeadlineFirstScheduler,
    )
}


def make_block_manager(
    config: SchedulerConfig, num_blocks: int, hash_block_tokens: int | None = None
) -> BlockManager:
    """The KV block manager `config` asks for: prefix-caching or plain. `hash_block_tokens`: tokens
    named by each of a sequence's `block_hashes` (simulated workloads that carry them)."""
    if config.enable_prefix_caching:
        return PrefixCachingBlockManager(num_blocks, config.block_size, config.watermark, hash_block_tokens)
    return BlockManager(num_blocks, config.block_size, config.watermark)


def make_scheduler(
    config: SchedulerConfig, blocks: BlockManager, max_model_len: int, num_host_blocks: int = 0
) -> Scheduler:
    """The policy `config` names. `num_host_blocks`: host swap space, in KV blocks (used when
    preemption_mode is swap)."""
    try:
        cls = POLICIES[config.policy]
    except KeyError:
        raise ConfigError(f"scheduler.policy: {unknown_choice('policy', config.policy, POLICIES)}") from None
    return cls(config, blocks, max_model_len, num_host_blocks)


__all__ = [
    "POLICIES",
    "BlockManager",
    "PrefixCachingBlockManager",
    "Scheduler",
    "SchedulerConfig",
    "SeqStatus",
    "Sequence",
    "SpeculativeConfig",
    "Step",
    "make_block_manager",
    "make_scheduler",
]
