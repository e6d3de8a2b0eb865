"""Every number a scenario or inline spec gives is finite and bounded; errors name the field's path,
the value given and what is allowed. The shipped catalogs pass the same validation."""

import copy

import numpy as np
import pytest

from simulator.common import limits
from simulator.common.errors import ConfigError
from simulator.scenario import parse_scenario
from simulator.scenario.build import build_deployment
from simulator.spec import get_hardware, get_model, hardware_names, model_names
from simulator.spec.catalog import _load_catalog
from simulator.spec.inline import HardwareFields, ModelFields, hardware_from_dict, model_from_dict
from simulator.workload import generate, load_workload
from simulator.workload.lengths import LognormalLength

CLASS = {"name": "c", "prompt_tokens": {"dist": "constant", "value": 100},
         "output_tokens": {"dist": "constant", "value": 10}}  # fmt: skip
BASE = {"name": "b", "model": "llama-3-8b", "hardware": "a100-80gb",
        "workload": {"arrival": {"process": "poisson", "rate": 2.0}, "num_requests": 20, "classes": [CLASS]}}  # fmt: skip
HARDWARE = {
    "memory_gib": 80,
    "memory_bandwidth_gbps": 2000,
    "tflops": {"fp16": 300},
    "interconnect_gbps": 300,
}
MODEL = {"num_layers": 4, "hidden_size": 512, "num_heads": 8, "num_kv_heads": 2, "intermediate_size": 1024,
         "vocab_size": 1000, "max_context": 2048}  # fmt: skip


def changed(path: str, value, base=BASE) -> dict:
    data = copy.deepcopy(base)
    node = data
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {}) if not part.isdigit() else node[int(part)]
    node[parts[-1]] = value
    return data


def error_of(data) -> str:
    with pytest.raises(ConfigError) as err:
        build_deployment(parse_scenario(data))
    return str(err.value)


@pytest.mark.parametrize(
    "path, value, expected",
    [
        ("workload.arrival.rate", float("inf"), ["workload.arrival.poisson.rate", "finite", "<= 1,000,000"]),
        ("workload.arrival.rate", float("nan"), ["finite number (got nan)"]),
        ("workload.num_requests", 1e12, ["workload.num_requests", "<= 50,000,000"]),
        ("workload.duration_s", 1e308, ["workload.duration_s", "<= 2,592,000"]),
        ("deployment.replicas", 100_000_000, ["deployment.replicas", "(got 100000000)", "<= 4,096"]),
        ("deployment.tensor_parallel", 65, ["deployment.tensor_parallel", "<= 64"]),
        ("deployment.price_per_gpu_hour", -1, ["deployment.price_per_gpu_hour", ">= 0"]),
        ("deployment.activation_reserve_gb", float("inf"), ["deployment.activation_reserve_gb", "finite"]),
        ("scheduler.max_num_batched_tokens", 10**12, ["scheduler.max_num_batched_tokens", "<= 10,000,000"]),
        ("scheduler.block_size", 10**9, ["scheduler.block_size", "<= 65,536"]),
        ("scheduler.swap_space_gb", float("nan"), ["scheduler.swap_space_gb", "finite"]),
        ("seed", -1, ["seed", ">= 0"]),
        ("run.max_time_s", float("inf"), ["run.max_time_s", "finite"]),
        ("workload.classes", [{**CLASS, "weight": float("inf")}], ["workload.classes.0.weight", "finite"]),
        (
            "workload.classes",
            [{**CLASS, "prompt_tokens": {"dist": "constant", "value": 10**19}}],
            ["workload.classes.0.prompt_tokens.constant.value", "<= 10,000,000"],
        ),
        (
            "workload.classes",
            [{**CLASS, "prompt_tokens": {"dist": "lognormal", "mean": 1e-300, "std": 1e7}}],
            ["lognormal.mean", ">= 1"],
        ),
        (
            "workload.arrival",
            {"process": "gamma", "rate": 1, "cv": 1e6},
            ["workload.arrival.gamma.cv", "<= 100"],
        ),
        ("execution.roofline.overhead.constant_s", 1e9, ["constant_s", "<= 60"]),
        ("autoscaling", {"target": 4, "interval_s": 1e-9}, ["autoscaling.interval_s", ">= 0.1"]),
        ("autoscaling", {"target": 4, "max_replicas": 10**6}, ["autoscaling.max_replicas", "<= 4,096"]),
        ("disaggregation", {"link_gbps": float("inf")}, ["disaggregation.link_gbps", "finite"]),
    ],
)
def test_out_of_range_numbers_name_path_value_and_bound(path, value, expected):
    message = error_of(changed(path, value))
    for fragment in expected:
        assert fragment in message, message


def test_rate_times_duration_is_bounded_before_drawing():
    data = changed("workload", {"arrival": {"process": "poisson", "rate": 1e5}, "duration_s": 2e6,
                                "classes": [CLASS]})  # fmt: skip
    message = error_of(data)
    assert "workload: rate x duration_s" in message and "2e+11 expected requests" in message
    assert "50,000,000" in message
    data["workload"]["num_requests"] = 100  # a small count bounds it instead
    assert len(generate(parse_scenario(data).workload, seed=0, max_context=4096)) == 100


def test_a_slow_rate_cannot_stretch_the_clock_past_ten_years():
    data = changed("workload.arrival.rate", 1e-9)
    assert "would span" in error_of(data) and "10 years" in error_of(data)


def test_the_draw_is_checked_too_when_a_study_changes_the_rate():
    workload = load_workload(BASE["workload"] | {"duration_s": 1000, "num_requests": None})
    fast = workload.model_copy(update={"arrival": workload.arrival.model_copy(update={"rate": 1e6})})
    with pytest.raises(ConfigError, match="expected requests"):
        generate(fast, seed=0, max_context=4096)


def test_a_diurnal_profile_with_a_sharp_peak_is_refused_before_thinning():
    rates = [1e5] + [0.0] * 99_999  # peak 100,000 x the mean
    data = changed("workload", {"arrival": {"process": "diurnal", "period_s": 100_000,
                                            "profile": {"kind": "table", "rates": rates}},
                                "duration_s": 100_000, "classes": [CLASS]})  # fmt: skip
    with pytest.raises(ConfigError, match="peak rate is 1e\\+05 times its mean"):
        generate(parse_scenario(data).workload, seed=0, max_context=4096)


def test_lengths_are_cut_at_the_token_ceiling():
    wide = LognormalLength(dist="lognormal", mean=1, std=limits.MAX_TOKENS)
    draws = wide.draw(np.random.default_rng(0), 100_000, None, "x")
    assert draws.min() >= 1 and draws.max() <= limits.MAX_TOKENS


def test_too_many_kv_blocks_for_memory_are_refused():
    tiny = {
        **MODEL,
        "num_layers": 1,
        "hidden_size": 8,
        "num_heads": 1,
        "num_kv_heads": 1,
        "intermediate_size": 8,
    }
    huge = {**HARDWARE, "memory_gib": 90_000}
    message = error_of(changed("hardware", huge, changed("model", tiny)))
    assert "KV blocks" in message and "16,777,216 per replica" in message
    fleet = changed("deployment", {"replicas": 4096}, changed("hardware", "h200"))  # the largest real case
    pool = build_deployment(parse_scenario(fleet)).pools[0]
    assert 2e8 < pool.num_blocks * pool.replicas <= limits.MAX_KV_BLOCKS


# --- inline specs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, expected",
    [
        (
            {"memory_bandwidth_gbps": float("nan")},
            "hardware.memory_bandwidth_gbps: Input should be a finite number (got nan); allowed: > 0 and <= 1,000,000",
        ),
        (
            {"memory_bandwidth_gbps": -5},
            "hardware.memory_bandwidth_gbps: Input should be greater than 0 (got -5)",
        ),
        ({"price_per_hour": -1}, "hardware.price_per_hour"),
        ({"price_per_hour": 1e9}, "<= 100,000"),
        ({"memory_gib": 1e9}, "hardware.memory_gib"),
        ({"price_per_hr": 2}, "hardware.price_per_hr: unknown key (did you mean 'price_per_hour'?)"),
        ({"tflops": {"fp8": 100}}, "tflops must give fp16 or bf16"),
        ({"tflops": {"bf_16": 100}}, "hardware.tflops.bf_16: unknown key (did you mean 'bf16'?)"),
        ({"tflops": {"fp16": float("inf")}}, "hardware.tflops.fp16: Input should be a finite number"),
        ({"interconnect_gbps": None}, "hardware.interconnect_gbps"),
    ],
)
def test_inline_hardware_is_validated_with_paths(change, expected):
    message = error_of(changed("hardware", {**HARDWARE, **change}))
    assert expected in message, message


def test_inline_hardware_names_missing_fields():
    message = error_of(changed("hardware", {"memory_gib": 80}))
    for field in ("memory_bandwidth_gbps", "tflops", "interconnect_gbps"):
        assert f"hardware.{field}: required field is missing" in message


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"num_heads": 0}, "model.num_heads: Input should be greater than 0"),
        ({"hidden_size": 0}, "model.hidden_size"),
        ({"num_kv_heads": 3}, "num_heads (8) must be a multiple of num_kv_heads (3)"),
        ({"hidden_size": 500}, "not a multiple of num_heads (8); give head_dim"),
        ({"num_layers": 1e9}, "model.num_layers: Input should be less than or equal to 4096"),
        ({"rope_theta": float("nan")}, "model.rope_theta"),
        ({"num_layer": 4}, "model.num_layer: unknown key (did you mean 'num_layers'?)"),
    ],
)
def test_inline_model_is_validated_with_paths(change, expected):
    message = error_of(changed("model", {**MODEL, **change}))
    assert expected in message, message


def test_specs_in_pools_and_drafts_name_their_place():
    pool = changed("disaggregation", {"prefill": {"hardware": {**HARDWARE, "memory_gib": -1}}})
    assert "disaggregation.prefill.hardware.memory_gib" in error_of(pool)
    draft = changed("scheduler", {"speculative": {"draft_model": {**MODEL, "vocab_size": 0},
                                                  "num_speculative_tokens": 2}})  # fmt: skip
    assert "scheduler.speculative.draft_model.vocab_size" in error_of(draft)


def test_a_valid_inline_spec_still_runs():
    scenario = parse_scenario(changed("hardware", {**HARDWARE, "name": "gpu-x"}, changed("model", MODEL)))
    deployment = build_deployment(scenario)
    assert deployment.pools[0].hardware == "gpu-x" and deployment.pools[0].num_blocks > 0


def test_an_fp32_only_processor_needs_a_calibration_not_the_roofline():
    cpu = {**HARDWARE, "tflops": {"fp32": 0.25}}
    hw = hardware_from_dict("cpu", cpu)
    assert hw.peak_flops("fp32") == 0.25e12
    with pytest.raises(ConfigError, match="'cpu' gives no fp16 or bf16 rate"):
        hw.peak_flops("fp16")


@pytest.mark.parametrize("name", model_names())
def test_every_catalog_model_passes_inline_validation(name):
    raw = _load_catalog("models.yaml")[name]
    ModelFields.model_validate(raw)  # the very validation a scenario's inline model gets
    assert model_from_dict(name, raw) == get_model(name)


@pytest.mark.parametrize("name", hardware_names())
def test_every_catalog_accelerator_passes_inline_validation(name):
    raw = _load_catalog("hardware.yaml")[name]
    HardwareFields.model_validate(raw)
    assert hardware_from_dict(name, raw) == get_hardware(name)
