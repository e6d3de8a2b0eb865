"""The simulated side of `validate --url` set up like the server measured: its KV blocks, block
size, prefix caching, context limit and scheduler settings as the server reports them
(calibration/measure/server_info.py), the scenario's values where it reports nothing, each of
those named in a warning."""

from __future__ import annotations

from calibration.measure.server_info import ServerConfig
from simulator.common.errors import ConfigError
from simulator.scenario import Scenario, build_deployment
from simulator.scheduling.policy_defaults import resolve


def settings_from_server(
    scenario: Scenario, server: ServerConfig, num_blocks: int | None = None
) -> tuple[dict, list[str]]:
    """(settings for simulate_like, warnings): what the server said, else the scenario's value
    (`num_blocks`: --num-blocks, which wins over the server's)."""
    read = server.settings
    try:
        pool = build_deployment(scenario).entry
        resolved, capacity = pool.resolved_scheduler, pool.num_blocks  # unset settings at the policy's defaults
    except ConfigError:  # the scenario's memory cannot hold the model: fine when the server says its blocks
        if num_blocks is None and "num_blocks" not in read:
            raise
        resolved, capacity = resolve(scenario.scheduler), None
    assumed = {
        "block_size": scenario.scheduler.block_size,
        "num_blocks": capacity,
        "enable_prefix_caching": resolved.enable_prefix_caching,
        "max_model_len": scenario.max_model_len(),
        "max_num_seqs": resolved.max_num_seqs,
        "max_num_batched_tokens": resolved.max_num_batched_tokens,
    }
    warnings = []
    values = {}
    for name, default in assumed.items():
        if name == "num_blocks" and num_blocks is not None:
            values[name] = num_blocks
            if name in read and read[name] != num_blocks:
                warnings.append(f"num_blocks: the server reports {read[name]}, --num-blocks {num_blocks} used")
        elif name in read:
            values[name] = read[name]
        else:
            values[name] = default
            origin = "the scenario's" if getattr(scenario.scheduler, name, None) is not None else "the policy default"
            if name == "num_blocks":
                origin = "from the scenario's memory"
            warnings.append(f"{name}: not readable from the server; assumed {default} ({origin})")
    if "policy" in read and read["policy"] != scenario.scheduler.policy:
        warnings.append(f"policy: the server runs {read['policy']!r}, the scenario simulates "
                        f"{scenario.scheduler.policy!r}")  # fmt: skip
    scheduler = scenario.scheduler.model_dump(mode="json", exclude_none=True)
    scheduler.update({k: values[k] for k in ("block_size", "enable_prefix_caching", "max_num_seqs",
                                             "max_num_batched_tokens")})  # fmt: skip
    if scheduler.get("max_model_len") is not None:
        scheduler["max_model_len"] = values["max_model_len"]
    settings = {
        "num_blocks": values["num_blocks"],
        "block_size": values["block_size"],
        "max_model_len": values["max_model_len"],
        "scheduler": scheduler,
        "server_config": server.to_dict(),
        "assumed": [w.split(":", 1)[0] for w in warnings if "not readable" in w],
    }
    return settings, warnings
