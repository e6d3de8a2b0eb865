"""The one place a scenario becomes plain objects: specs, the memory fit, step-time models, prices.

`build_deployment` resolves the model and hardware specs, fits the weights and KV cache in GPU
memory (minus a speculative draft's share), picks each pool's step-time model (roofline with the
scenario's efficiencies, or a calibration file) and prices the GPUs. The serving layer receives
the result and never reads the scenario.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from simulator.common.errors import ConfigError
from simulator.common.limits import MAX_KV_BLOCKS, MAX_KV_BLOCKS_PER_REPLICA
from simulator.execution import ExecutionModel, RooflineEfficiency, RooflineModel, StepOverhead
from simulator.execution.calibration_file import REPO_ROOT, calibrated_model
from simulator.execution.kernels.resolve import find_tables, kernel_model, moe_kernel_model
from simulator.execution.moe_roofline import MoERooflineModel
from simulator.scenario.schema import Scenario, pool_scenario, resolve_model
from simulator.scheduling import DeviceClass
from simulator.scheduling.speculative import SpeculativeConfig
from simulator.serving.deployment import Deployment, KVLink, Pool
from simulator.spec import GiB, ModelSpec, get_model, memory


def resolve_calibration_path(path: str, scenario: Scenario) -> Path:
    """A scenario's calibration path: absolute, relative to the scenario file, or to the repository."""
    for candidate in (scenario.resolve(path), REPO_ROOT / path):
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"execution.calibration: file {path!r} not found next to the scenario "
        f"({scenario.base_dir or Path.cwd()}) or in the repository ({REPO_ROOT})"
    )


def needs_moe_roofline(model: ModelSpec, dep) -> bool:
    """Experts, latent attention, sliding windows or more than tensor parallelism: the roofline of
    simulator/execution/moe_roofline.py (the kernel tables price dense tensor-parallel models)."""
    return model.is_moe or model.uses_mla or bool(model.num_sliding_window_layers) or not dep.layout.is_plain


def _roofline(scenario: Scenario, model: ModelSpec, notice: str = "") -> ExecutionModel:
    dep, roof = scenario.deployment, scenario.execution.roofline
    if needs_moe_roofline(model, dep):
        return MoERooflineModel(
            model, scenario.hardware_spec(), layout=dep.layout, weight_dtype=dep.weight_dtype,
            kv_dtype=dep.kv_dtype, expert_dtype=dep.expert_dtype, compute_dtype=roof.compute_dtype,
            micro_batches=dep.micro_batches, routing_imbalance=dep.routing_imbalance,
            efficiency=RooflineEfficiency(**roof.efficiency.model_dump(exclude_none=True)),
            overhead=StepOverhead(**roof.overhead.model_dump(exclude_none=True)), notice=notice,
        )  # fmt: skip
    return RooflineModel(
        model,
        scenario.hardware_spec(),
        tp=dep.tensor_parallel,
        weight_dtype=dep.weight_dtype,
        kv_dtype=dep.kv_dtype,
        compute_dtype=roof.compute_dtype,
        efficiency=RooflineEfficiency(**roof.efficiency.model_dump(exclude_none=True)),
        overhead=StepOverhead(**roof.overhead.model_dump(exclude_none=True)),
        notice=notice,
    )


def _kernel_tables(scenario: Scenario) -> tuple[ExecutionModel | None, str]:
    """The kernel-table model of the scenario's serving engine on its GPU, or None and why not."""
    ex, dep = scenario.execution, scenario.deployment
    model, hardware = scenario.model_spec(), scenario.hardware_spec()
    named = isinstance(ex.kernel_tables, str)
    if named:
        path = scenario.resolve(ex.kernel_tables)
        if not path.is_file():
            path = REPO_ROOT / ex.kernel_tables
        if not path.is_file():
            raise ConfigError(f"execution.kernel_tables: file {ex.kernel_tables!r} not found")
    else:
        path, why = find_tables(ex.engine, ex.engine_version, hardware.name, model.name)
        if path is None:
            return None, f"{why}: step times from the roofline model"
    if model.is_moe:
        return moe_kernel_model(path, model, hardware, layout=dep.layout, weight_dtype=dep.weight_dtype,
                                kv_dtype=dep.kv_dtype, expert_dtype=dep.expert_dtype, micro_batches=dep.micro_batches,
                                routing_imbalance=dep.routing_imbalance, check_names=named)  # fmt: skip
    return kernel_model(path, model, hardware, tp=dep.tensor_parallel, weight_dtype=dep.weight_dtype,
                        kv_dtype=dep.kv_dtype, host_overhead=ex.host_overhead.model_dump(exclude_none=True),
                        allreduce=ex.allreduce, check_names=named)  # fmt: skip


def execution_model(scenario: Scenario) -> ExecutionModel:
    """The step-time model a scenario asks for: a calibration file; else the measured kernel tables
    of its serving engine where llmsim ships them for the model and GPU; else the roofline (which
    then says why)."""
    if scenario.execution.calibration is None:
        notice, spec = "", scenario.model_spec()
        if (scenario.execution.uses_kernel_tables and not spec.is_moe
                and needs_moe_roofline(spec, scenario.deployment)):  # fmt: skip
            notice = ("kernel tables price dense tensor-parallel models and mixtures of experts (none for a dense "
                      "model's latent attention, sliding windows or parallel layouts): step times from the roofline "
                      "model")
        elif scenario.execution.uses_kernel_tables:
            model, notice = _kernel_tables(scenario)
            if model is not None:
                return model
        return _roofline(scenario, scenario.model_spec(), notice)
    dep = scenario.deployment
    path = resolve_calibration_path(scenario.execution.calibration, scenario)
    return calibrated_model(path, scenario.model_spec(), scenario.hardware_spec(), tp=dep.tensor_parallel,
                            weight_dtype=dep.weight_dtype, kv_dtype=dep.kv_dtype)  # fmt: skip


# --- speculative decoding's draft model ------------------------------------------------------


def draft_model_spec(config: SpeculativeConfig | None) -> ModelSpec | None:
    """The draft model's spec (None for n-gram drafting or no speculation)."""
    if config is None or not config.uses_draft_model:
        return None
    try:
        if isinstance(config.draft_model, str):
            return get_model(config.draft_model)
    except ConfigError as exc:
        raise ConfigError(f"scheduler.speculative.draft_model: {exc}") from None
    return resolve_model(config.draft_model, "scheduler.speculative.draft_model", default_name="custom-draft")


def draft_execution(scenario: Scenario) -> ExecutionModel | None:
    """The draft's step-time model: its spec on the scenario's hardware and settings."""
    draft = draft_model_spec(scenario.scheduler.speculative)
    return None if draft is None else _roofline(scenario, draft)


def blocks_left_with_draft(scenario: Scenario, num_blocks: int) -> int:
    """Target KV blocks once the draft's weights and its KV cache share the memory."""
    draft = draft_model_spec(scenario.scheduler.speculative)
    if draft is None:
        return num_blocks
    dep, bs = scenario.deployment, scenario.scheduler.block_size
    target_kv = memory.kv_bytes_per_token_per_gpu(scenario.model_spec(), dep.kv_dtype, dep.layout)
    draft_kv = memory.kv_bytes_per_token_per_gpu(draft, dep.kv_dtype, dep.tensor_parallel)
    free = num_blocks * bs * target_kv - memory.weights_per_gpu_bytes(draft, dep.weight_dtype, dep.tensor_parallel)
    blocks = int(free // (target_kv + draft_kv)) // bs
    if blocks < 1:
        raise ConfigError(
            f"scheduler.speculative.draft_model: {draft.name} leaves no memory for the KV cache of "
            f"{scenario.model_spec().name}; use a smaller draft or more tensor parallelism"
        )
    return blocks


# --- pools and the deployment ----------------------------------------------------------------


def kv_capacity_blocks(scenario: Scenario) -> int:
    """KV blocks per replica the scenario's GPUs hold once weights, activations and a draft fit."""
    model, hw, dep = scenario.model_spec(), scenario.hardware_spec(), scenario.deployment
    reserve = None if dep.activation_reserve_gb is None else dep.activation_reserve_gb * 1e9
    seqs = scenario.scheduler.max_num_seqs
    num_blocks = memory.kv_capacity_blocks(
        model,
        hw,
        tp=dep.layout,
        expert_dtype=dep.expert_dtype,
        max_num_seqs=None if seqs is None else -(-seqs // dep.data_parallel_attention),
        weight_dtype=dep.weight_dtype,
        kv_dtype=dep.kv_dtype,
        gpu_memory_utilization=dep.gpu_memory_utilization,
        activation_reserve_bytes=reserve,
        block_size=scenario.scheduler.block_size,
    )
    return blocks_left_with_draft(scenario, num_blocks)


def build_pool(
    scenario: Scenario,
    role: Literal["colocated", "prefill", "decode"],
    *,
    num_blocks: int | None = None,
    execution: ExecutionModel | None = None,
    max_model_len: int | None = None,
) -> Pool:
    """One pool from a colocated scenario (a disaggregated scenario's pool, see pool_scenario).
    `num_blocks`, `execution` and `max_model_len` replace what the scenario implies (a validation
    gives the measured engine's)."""
    dep, cfg = scenario.deployment, scenario.scheduler
    model, hw = scenario.model_spec(), scenario.hardware_spec()
    kv_bytes_per_token = memory.kv_bytes_per_token_per_gpu(model, dep.kv_dtype, dep.layout)
    num_blocks = kv_capacity_blocks(scenario) if num_blocks is None else num_blocks
    num_host_blocks = int(cfg.swap_space_gb * GiB // (cfg.block_size * kv_bytes_per_token))
    check_block_count(scenario, num_blocks, num_host_blocks if cfg.preemption_mode == "swap" else 0)
    return Pool(
        role=role,
        replicas=dep.replicas,
        hardware=hw.name,
        tensor_parallel=dep.tensor_parallel,
        layout=dep.layout,
        scheduler=cfg,
        router=scenario.router,
        num_blocks=num_blocks,
        max_model_len=scenario.max_model_len() if max_model_len is None else max_model_len,
        execution=execution_model(scenario) if execution is None else execution,
        usd_per_hour=scenario.price_per_hour(),
        # every rank copies its own shard over its own host link
        swap_s_per_token=kv_bytes_per_token / hw.host_link_bandwidth,
        num_host_blocks=num_host_blocks,
        draft=draft_execution(scenario),
        device=DeviceClass(hw.name, hw.memory_bytes / GiB, world_size=dep.gpus_per_replica),
    )


def check_block_count(scenario: Scenario, num_blocks: int, num_host_blocks: int) -> None:
    """Every replica keeps a list of its free KV blocks: refuse more blocks than memory can list."""
    most = scenario.deployment.replicas
    if scenario.autoscaling is not None:
        most = max(most, scenario.autoscaling.max_replicas)
    per_replica = num_blocks + num_host_blocks
    if per_replica > MAX_KV_BLOCKS_PER_REPLICA or per_replica * most > MAX_KV_BLOCKS:
        raise ConfigError(
            f"{most} replica(s) x {per_replica:,} KV blocks ({num_blocks:,} on the GPUs, {num_host_blocks:,} "
            f"for swapping) is more than the simulator tracks ({MAX_KV_BLOCKS_PER_REPLICA:,} per replica, "
            f"{MAX_KV_BLOCKS:,} in all); raise scheduler.block_size, or lower the hardware's memory_gib, "
            "scheduler.swap_space_gb or the replicas"
        )


def kv_link(scenario: Scenario, prefill: Scenario) -> KVLink:
    """The prefill pool's GPUs sending KV to the decode pool: the section's link, else the prefill
    hardware's interconnect."""
    cfg = scenario.disaggregation
    hw, dep = prefill.hardware_spec(), prefill.deployment
    bandwidth = hw.interconnect_bandwidth if cfg.link_gbps is None else cfg.link_gbps * 1e9
    latency = hw.interconnect_latency if cfg.link_latency_us is None else cfg.link_latency_us * 1e-6
    per_token = memory.kv_bytes_per_token_per_gpu(scenario.model_spec(), dep.kv_dtype, dep.layout)
    return KVLink(bandwidth, latency, per_token)


def build_deployment(
    scenario: Scenario,
    *,
    num_blocks: int | None = None,
    execution: ExecutionModel | None = None,
    max_model_len: int | None = None,
) -> Deployment:
    """The scenario's deployment as plain objects. The overrides apply to a colocated deployment."""
    if scenario.disaggregation is None:
        pools = (build_pool(scenario, "colocated", num_blocks=num_blocks, execution=execution,
                            max_model_len=max_model_len),)  # fmt: skip
        link = None
    else:
        if (num_blocks, execution, max_model_len) != (None, None, None):
            raise ConfigError("a disaggregated deployment takes its capacity and step times from its pools")
        prefill = pool_scenario(scenario, "prefill")
        pools = (build_pool(prefill, "prefill"), build_pool(pool_scenario(scenario, "decode"), "decode"))
        link = kv_link(scenario, prefill)
    dep = scenario.deployment
    return Deployment(
        name=scenario.name,
        model=scenario.model_spec().name,
        weight_dtype=dep.weight_dtype,
        kv_dtype=dep.kv_dtype,
        policy=scenario.scheduler.policy,
        router=scenario.router,
        pools=pools,
        link=link,
        autoscaling=scenario.autoscaling,
        merge_decode_steps=scenario.run.merge_decode_steps,
        max_time_s=scenario.run.max_time_s,
    )
