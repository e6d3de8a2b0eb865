"""The real serving loop: the simulator's scheduler deciding, the model runner executing.

Each `step()` asks the shared scheduler (the very objects the SimPy replica drives) for the next
step at the engine clock, runs it on the device, and hands the sampled tokens back to the
scheduler, which advances progress, stamps token times, finishes sequences and frees their KV
blocks. Every step is recorded (its rows, the measured execution time, and the scheduler's own
overhead apart): those records are what the calibration fits. The engine clock is
`time.perf_counter()` relative to the engine's start; token times are on that clock.

The engine is not thread-safe: one thread drives it (the server funnels requests through a queue).
"""

from __future__ import annotations

import itertools
import random
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from backend.runner import ModelRunner
from backend.sampling import GREEDY, SamplingParams
from simulator.common.errors import ConfigError
from simulator.common.files import write_text_atomic
from simulator.metrics import STATUS_ERROR, STATUS_OK, STATUS_REJECTED, STATUS_UNFINISHED, RequestRecord
from simulator.scheduling import (
    DeviceClass,
    SchedulerConfig,
    SeqStatus,
    Sequence,
    make_block_manager,
    make_scheduler,
)

_MAX_EMPTY_STEPS = 8  # scheduler calls in a row that only preempt before a step gives up


@dataclass
class StepRecord:
    """One executed step: which rows ran, how long the device took, how long the scheduler took."""

    index: int
    start: float  # engine clock when the scheduler was asked for the step
    end: float  # engine clock when execution finished (the time stamped on its tokens)
    seq_ids: list[int]
    new_tokens: list[int]
    cached_tokens: list[int]
    num_prefill_tokens: int  # new tokens of rows still in their prompt (or recomputing one)
    execute_s: float  # wall seconds of ModelRunner.execute (device synchronised)
    schedule_s: float  # wall seconds of the scheduler: building the step and completing it
    num_preempted: int
    num_running: int  # after the step
    num_waiting: int
    kv_usage: float  # fraction of KV blocks in use after the step

    @property
    def num_seqs(self) -> int:
        return len(self.seq_ids)

    @property
    def num_batched_tokens(self) -> int:
        return sum(self.new_tokens)


class Engine:
    """Continuous batching over a ModelRunner with any policy of the scheduler registry."""

    def __init__(
        self,
        runner: ModelRunner,
        scheduler_config: SchedulerConfig | None = None,
        max_model_len: int | None = None,
        max_records: int | None = None,
    ):
        config = scheduler_config or SchedulerConfig(block_size=runner.block_size)
        if config.block_size != runner.block_size:
            raise ConfigError(
                f"scheduler.block_size: got {config.block_size}, but the runner's KV cache has blocks "
                f"of {runner.block_size} tokens; use the same value for both"
            )
        if config.speculative is not None:
            raise ConfigError("scheduler.speculative: the engine does not run speculative decoding; leave it unset")
        context = runner.spec.max_context
        max_model_len = max_model_len or config.max_model_len or context
        if max_model_len > context:
            raise ConfigError(
                f"max_model_len: got {max_model_len}; allowed: at most the model's context, {context}"
            )
        self.runner = runner
        self.config = config
        self.max_model_len = max_model_len
        blocks = make_block_manager(config, runner.num_blocks)
        host_blocks = 0
        if config.preemption_mode == "swap":
            host_blocks = int(config.swap_space_gb * 2**30 // runner.kv.bytes_per_block)
            if host_blocks:
                runner.allocate_host_cache(host_blocks)
        self.scheduler = make_scheduler(config, blocks, max_model_len, host_blocks, device_class(runner.device))
        self.records: deque[StepRecord] = deque(maxlen=max_records)
        self._sampling: dict[int, SamplingParams] = {}
        self._ids = itertools.count()
        self._steps = itertools.count()
        self._t0 = time.perf_counter()

    # --- clock and state --------------------------------------------------------------------
    def now(self) -> float:
        """Seconds since the engine started."""
        return time.perf_counter() - self._t0

    @property
    def blocks(self):
        return self.scheduler.blocks

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work

    # --- requests ---------------------------------------------------------------------------
    def add_request(
        self,
        prompt_token_ids: list[int],
        max_tokens: int,
        *,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        ignore_eos: bool = False,
        eos_token_id: int | None = None,
        priority: int = 0,
        arrival: float | None = None,
        request_class: str = "default",
    ) -> Sequence:
        """Queue a request. A request that can never fit (longer than max_model_len, or than the
        whole KV cache) comes back finished with finish_reason "rejected"."""
        vocab = self.runner.spec.vocab_size
        if not prompt_token_ids:
            raise ConfigError("prompt: got an empty prompt; allowed: at least one token")
        bad = next((t for t in prompt_token_ids if not isinstance(t, int) or not 0 <= t < vocab), None)
        if bad is not None:
            raise ConfigError(f"prompt: token id {bad!r} is out of range; allowed: integers 0..{vocab - 1}")
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise ConfigError(f"max_tokens: got {max_tokens!r}; allowed: an integer >= 1")
        if seed is None:
            seed = random.getrandbits(63)  # an unseeded sampled request still gets its own stream
        params = SamplingParams(temperature, top_p, seed)
        now = self.now()
        seq = Sequence(
            seq_id=next(self._ids),
            prompt_len=len(prompt_token_ids),
            max_output=max_tokens,
            arrival=now if arrival is None else arrival,
            request_class=request_class,
            priority=priority,
            prompt_token_ids=list(prompt_token_ids),
            stop_token_ids=frozenset() if ignore_eos or eos_token_id is None else frozenset({eos_token_id}),
        )
        if self.scheduler.add(seq, now) and not params.greedy:
            self._sampling[seq.seq_id] = params
        return seq

    def abort(self, seq: Sequence, reason: str = "abort") -> None:
        """Drop a request wherever it is; its KV blocks return at once. `reason` is its finish
        reason: "abort" (its client went away) or "stop" (a stop string matched)."""
        self.scheduler.abort(seq, self.now())
        self._sampling.pop(seq.seq_id, None)
        if seq.finish_reason == "abort":
            seq.finish_reason = reason

    # --- the loop ---------------------------------------------------------------------------
    def step(self, at: float | None = None) -> StepRecord | None:
        """Schedule, execute and complete one step; None when nothing can run.

        `at` is the engine-clock instant the scheduler decides for (default: now); a replay that
        admits requests at step boundaries passes the boundary, as the simulator decides then."""
        t0 = time.perf_counter()
        preempted = 0
        for _ in range(_MAX_EMPTY_STEPS):
            step = self.scheduler.schedule(self.now() if at is None else at)
            if step is None:
                return None
            preempted += len(step.preempted)
            if step.seqs:
                break
            self.runner.execute(step)  # only preemptions: carry out their swaps, ask again
        else:
            return None
        sampling = [self._sampling.get(seq.seq_id, GREEDY) for seq in step.seqs]
        prefill_tokens = step.num_prefill_tokens
        t1 = time.perf_counter()
        tokens = self.runner.execute(step, sampling)
        t2 = time.perf_counter()
        end = t2 - self._t0
        for seq in self.scheduler.complete(step, end, tokens):
            self._sampling.pop(seq.seq_id, None)
        t3 = time.perf_counter()
        record = StepRecord(
            index=next(self._steps),
            start=t0 - self._t0,
            end=end,
            seq_ids=[seq.seq_id for seq in step.seqs],
            new_tokens=list(step.new_tokens),
            cached_tokens=list(step.cached_tokens),
            num_prefill_tokens=prefill_tokens,
            execute_s=t2 - t1,
            schedule_s=(t1 - t0) + (t3 - t2),
            num_preempted=preempted,
            num_running=self.scheduler.num_running,
            num_waiting=self.scheduler.num_waiting,
            kv_usage=self.scheduler.blocks.usage,
        )
        self.records.append(record)
        return record

    def run_until_idle(self) -> None:
        """Step until every queued request has finished."""
        while self.scheduler.has_work:
            if self.step() is None:
                raise RuntimeError(
                    f"the scheduler has {self.scheduler.num_waiting} waiting and "
                    f"{self.scheduler.num_running} running requests but schedules nothing"
                )

    def generate(self, prompts: Iterable[list[int]], max_tokens: int = 16, **options) -> list[list[int]]:
        """Serve `prompts` together (continuous batching) and return each one's output token ids.
        `options` are add_request's keyword arguments, the same for every prompt."""
        seqs = [self.add_request(p, max_tokens, **options) for p in prompts]
        self.run_until_idle()
        return [list(seq.output_token_ids) for seq in seqs]

    # --- records ----------------------------------------------------------------------------
    def records_frame(self) -> pd.DataFrame:
        """One row per step. List columns (seq_ids, new_tokens, cached_tokens) hold
        space-separated integers, so the frame writes to CSV as is."""
        rows = []
        for record in self.records:
            row = asdict(record)
            for key in ("seq_ids", "new_tokens", "cached_tokens"):
                row[key] = " ".join(map(str, row[key]))
            row["num_seqs"] = record.num_seqs
            row["num_batched_tokens"] = record.num_batched_tokens
            row["num_decode_seqs"] = record.num_seqs - sum(1 for n in record.new_tokens if n > 1)
            row["context_tokens"] = sum(record.cached_tokens) + record.num_batched_tokens
            rows.append(row)
        columns = [
            "index", "start", "end", "num_seqs", "num_batched_tokens", "num_prefill_tokens",
            "num_decode_seqs", "context_tokens", "execute_s", "schedule_s", "num_preempted",
            "num_running", "num_waiting", "kv_usage", "seq_ids", "new_tokens", "cached_tokens",
        ]  # fmt: skip
        return pd.DataFrame(rows, columns=columns)

    def save_records(self, path: str | Path) -> Path:
        """Write the step records as CSV (atomically)."""
        path = Path(path)
        write_text_atomic(path, self.records_frame().to_csv(index=False, float_format="%.9g"))
        return path


def device_class(device) -> DeviceClass:
    """The runner's device as the scheduler's defaults see it (vLLM V1 sizes batches by it)."""
    if device.type == "cuda":
        import torch

        props = torch.cuda.get_device_properties(device)
        return DeviceClass(props.name, props.total_memory / 2**30)
    return DeviceClass(str(device), is_cpu=device.type == "cpu")


_STATUS = {"length": STATUS_OK, "stop": STATUS_OK, "rejected": STATUS_REJECTED, "abort": STATUS_ERROR}


def to_request_records(seqs: Iterable[Sequence]) -> list[RequestRecord]:
    """The engine's requests as the metrics module's records (times on the engine clock): a
    served run is summarised by the same code as a simulated one."""
    records = []
    for seq in seqs:
        status = STATUS_UNFINISHED
        if seq.status is SeqStatus.FINISHED:
            status = _STATUS.get(seq.finish_reason, STATUS_UNFINISHED)
        records.append(
            RequestRecord(
                request_id=seq.seq_id,
                request_class=seq.request_class,
                arrival=seq.arrival,
                prompt_tokens=seq.prompt_len,
                token_times=seq.token_times,
                status=status,
                replica=seq.replica,
                num_preemptions=seq.num_preemptions,
                cached_prompt_tokens=seq.num_cached_prefix,
                reason=seq.rejection,
            )
        )
    return records
