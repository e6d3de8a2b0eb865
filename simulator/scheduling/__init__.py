"""Batching policies and the KV block manager: plain Python, shared by simulator and engine."""

from simulator.errors import ConfigError
from simulator.scheduling.base import Scheduler, Step
from simulator.scheduling.config import SchedulerConfig
from simulator.scheduling.kv_blocks import BlockManager
from simulator.scheduling.sequence import Sequence, SeqStatus
from simulator.scheduling.static import StaticBatchScheduler
from simulator.scheduling.vllm import VLLMScheduler

POLICIES: dict[str, type[Scheduler]] = {cls.name: cls for cls in (VLLMScheduler, StaticBatchScheduler)}


def make_scheduler(config: SchedulerConfig, blocks: BlockManager, max_model_len: int) -> Scheduler:
    try:
        cls = POLICIES[config.policy]
    except KeyError:
        raise ConfigError(
            f"scheduler.policy: unknown policy {config.policy!r}; allowed: {', '.join(sorted(POLICIES))}"
        ) from None
    return cls(config, blocks, max_model_len)


__all__ = [
    "POLICIES", "BlockManager", "Scheduler", "SchedulerConfig", "Sequence", "SeqStatus", "Step",
    "make_scheduler",
]
