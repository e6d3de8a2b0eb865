import pytest

from simulator.common.errors import ConfigError
from simulator.spec import get_hardware, get_model, hardware_names, model_names

# Parameter counts as published (model cards, papers), in billions.
PUBLISHED_PARAMS = {
    "llama-2-7b": 6.74,
    "llama-3-8b": 8.03,
    "llama-3-70b": 70.55,
    "mistral-7b": 7.24,
    "qwen2.5-7b": 7.62,
}


@pytest.mark.parametrize("name,billions", PUBLISHED_PARAMS.items())
def test_parameter_counts_match_published(name, billions):
    assert get_model(name).num_params / 1e9 == pytest.approx(billions, rel=0.01)


@pytest.mark.parametrize("name,millions", [("llama-20m", 20), ("llama-100m", 100), ("llama-400m", 400)])
def test_small_models_have_their_nominal_size(name, millions):
    model = get_model(name)
    assert model.num_params / 1e6 == pytest.approx(millions, rel=0.05)
    assert model.head_dim == 64
    assert model.num_kv_heads < model.num_heads  # grouped-query attention
    assert model.max_context == 2048


def test_kv_bytes_per_token_by_hand():
    # 2 (K and V) x layers x kv heads x head_dim x bytes
    assert get_model("llama-3-8b").kv_bytes_per_token("fp16") == 2 * 32 * 8 * 128 * 2 == 131072
    assert get_model("llama-2-7b").kv_bytes_per_token("fp16") == 2 * 32 * 32 * 128 * 2
    assert get_model("llama-3-70b").kv_bytes_per_token("fp8") == 2 * 80 * 8 * 128 * 1
    assert get_model("qwen2.5-7b").kv_bytes_per_token("fp16") == 2 * 28 * 4 * 128 * 2


def test_qwen_has_qkv_bias_and_others_do_not():
    assert get_model("qwen2.5-7b").attention_bias
    assert not get_model("llama-3-8b").attention_bias


def test_weight_bytes_llama3_8b_fp16():
    # 8,030,261,248 parameters, all 16-bit.
    assert get_model("llama-3-8b").weight_bytes("fp16") == 8_030_261_248 * 2


def test_unknown_model_suggests_close_names():
    with pytest.raises(ConfigError, match="llama-3-8b"):
        get_model("llama3-8b")


def test_unknown_hardware_suggests_close_names():
    with pytest.raises(ConfigError, match="h100-sxm"):
        get_hardware("h100-sxm5")


def test_lookup_is_case_insensitive():
    assert get_model("Llama-3-8B").name == "llama-3-8b"
    assert get_hardware("A10G").name == "a10g"


@pytest.mark.parametrize("name", model_names())
def test_every_model_loads_with_a_source(name):
    model = get_model(name)
    assert model.source
    assert model.num_layers > 0 and model.max_context > 0


def test_catalogs_hold_the_expected_entries():
    assert set(PUBLISHED_PARAMS) | {"llama-20m", "llama-100m", "llama-400m"} <= set(model_names())
    datacenter = {"a100-40gb", "a100-80gb", "h100-sxm", "h100-pcie", "h200", "b200", "mi300x"}
    expected = {"a10g", "l4", "l40s"} | datacenter
    assert expected <= set(hardware_names())


@pytest.mark.parametrize("name", hardware_names())
def test_every_hardware_loads_with_a_source_and_price(name):
    hw = get_hardware(name)
    assert hw.source and hw.price_per_hour > 0
    assert hw.memory_bytes >= 16e9 and hw.memory_bandwidth > 100e9
    assert hw.flops["fp16"] > 0 and hw.flops["bf16"] > 0
    assert hw.interconnect_bandwidth > 0 and hw.host_link_bandwidth > 0
    assert not hw.extra, f"unexpected fields {hw.extra}"
    # fp8 and int8 units, where present, are at least as fast as 16-bit ones.
    for dtype in ("fp8", "int8"):
        if dtype in hw.flops:
            assert hw.flops[dtype] >= hw.flops["fp16"]


def test_fp8_only_on_chips_that_have_it():
    for name in ("a100-40gb", "a100-80gb", "a10g"):
        hw = get_hardware(name)
        assert "fp8" not in hw.flops
        assert hw.peak_flops("fp8") == hw.peak_flops("fp16")  # falls back to 16-bit speed
    for name in ("l4", "l40s", "h100-sxm", "h200", "b200", "mi300x"):
        hw = get_hardware(name)
        assert hw.peak_flops("fp8") == pytest.approx(2 * hw.peak_flops("fp16"), rel=0.03)  # datasheets round


def test_datasheet_numbers_read_in_their_units():
    h100 = get_hardware("h100-sxm")
    assert h100.memory_bytes == pytest.approx(81559 * 2**20, rel=1e-3)  # nvidia-smi total, in GiB
    assert h100.memory_bandwidth == 3350e9
    assert h100.flops["bf16"] == pytest.approx(989.5e12)
    assert get_hardware("a10g").memory_bandwidth == 600e9
