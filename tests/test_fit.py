"""Fitting step times: the fit recovers known coefficients, errors are held out, ranges hold, files round-trip."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from calibration.fitting.fit import (
    calibrate,
    cross_validated,
    fit_coefficients,
    fold_indices,
    initial_guess,
    percentage_errors,
)
from calibration.fitting.transfer import effective_rates
from calibration.measure.measurements import (
    decode_layout,
    describe_step,
    encode_layout,
    load_measurements,
    meta_path,
)
from calibration.measure.step_grid import FULL, sweep_points
from simulator.cli import main
from simulator.common.errors import ConfigError
from simulator.execution.calibration_file import REPO_ROOT, load_calibration
from simulator.execution.fitted import (
    Coefficients,
    FittedModel,
    MeasuredRange,
    StepFeatures,
    StepWork,
    predict,
)
from simulator.scenario import execution_model, parse_scenario
from simulator.spec import get_model

SPEC = get_model("llama-100m")
WORK = StepWork.from_spec(SPEC, "fp32", "fp32")
TRUE = Coefficients(
    overhead_s=2e-3,
    overhead_per_sequence_s=5e-5,
    overhead_per_token_s=0.0,
    weight_bandwidth=20e9,
    matmul_flops=150e9,
    prefill_attention_s_per_pair=WORK.attention_flops_per_pair / 60e9,
    decode_attention_s_per_token=WORK.kv_bytes_per_token / 10e9,
    decode_padding_s_per_token=WORK.kv_bytes_per_token / 20e9,
    matvec_read_factor=0.75,
    knee_sharpness=4.0,
    decode_spill_s_per_token=WORK.kv_bytes_per_token / 30e9,
    attention_cache_tokens=12000.0,
)
PEAKS = {"measured_memory_bandwidth": 40e9, "measured_matmul_flops": 250e9}


def synthetic_csv(path: Path, noise: float = 0.01, seed: int = 0, model: str = "llama-100m") -> Path:
    """Measurements the model shape generates with TRUE coefficients, times lognormal noise."""
    points = sweep_points(
        FULL, max_tokens=2048, max_batch=128, max_context=2048, kv_blocks=4096, block_size=16
    )
    rng = np.random.default_rng(seed)
    rows = []
    for p in points:
        new = np.array([[n for n, _ in p.rows]])
        cached = np.array([[c for _, c in p.rows]])
        t = predict(TRUE.vector(), WORK, StepFeatures.of(new, cached))[0] * np.exp(rng.normal(0, noise))
        rows.append(
            {
                "region": p.region,
                "layout": encode_layout(list(p.rows)),
                **describe_step(list(p.rows)),
                "median_s": t,
            }
        )
    pd.DataFrame(rows).to_csv(path, index=False)
    meta = {"model": model, "dtype": "fp32", "device_type": "cpu", "device": "synthetic", **PEAKS}
    meta_path(path).write_text(json.dumps(meta))
    return path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    csv = synthetic_csv(tmp_path_factory.mktemp("fit") / "synthetic.csv")
    out = csv.with_name("synthetic.yaml")
    cal, result, m = calibrate(csv, out, plot=False)
    return cal, result, m, out


def test_fit_recovers_known_coefficients(fitted):
    cal, *_ = fitted
    got = cal.fitted.coefficients
    for name in (
        "weight_bandwidth",
        "prefill_attention_s_per_pair",
        "decode_attention_s_per_token",
        "decode_padding_s_per_token",
        "matvec_read_factor",
        "decode_spill_s_per_token",
        "attention_cache_tokens",
    ):
        assert getattr(got, name) == pytest.approx(getattr(TRUE, name), rel=0.1), name
    # per-token overhead and compute-bound matmuls trade off; their sum is what the data fixes
    assert effective_rates(got, WORK)["linear_flops"] == pytest.approx(TRUE.matmul_flops, rel=0.05)
    assert cal.fitted.fit_error["heldout_mape_percent"]["all"] < 3.0
    assert cal.fitted.fit_error["target_met"] is True


def test_fit_predictions_match_truth_on_unmeasured_steps(fitted):
    cal, *_ = fitted
    model = FittedModel(cal.fitted.coefficients, cal.fitted.work, cal.fitted.measured_range)
    truth = FittedModel(TRUE, WORK, cal.fitted.measured_range)
    for new, cached in (
        ([300], [700]),
        ([1] * 40, [900] * 40),
        ([200] + [1] * 10, [0] + list(range(50, 550, 50))),
    ):
        assert model.step_time(np.array(new), np.array(cached)) == pytest.approx(
            truth.step_time(np.array(new), np.array(cached)), rel=0.04
        )


def test_heldout_predictions_come_from_fits_without_the_point(fitted):
    _, result, m, _ = fitted
    f, times, regions = m.features(), m.times, m.regions
    fold = fold_indices(regions, 5)
    assert set(np.unique(fold)) == set(range(5))
    for k in range(5):  # every fold holds every region
        assert set(regions[fold == k]) == set(regions)
    x0 = initial_guess(f, times, WORK, m.meta)
    held = cross_validated(f, times, regions, WORK, x0, 5)
    np.testing.assert_allclose(held, result.held_out)
    test = fold == 2
    keep = ~test
    train = StepFeatures(*(getattr(f, n)[keep] for n in StepFeatures.__dataclass_fields__))
    tested = StepFeatures(*(getattr(f, n)[test] for n in StepFeatures.__dataclass_fields__))
    x = fit_coefficients(train, times[keep], WORK, x0)
    np.testing.assert_allclose(held[test], predict(x, WORK, tested), rtol=1e-9)


def test_percentage_errors_per_region_and_over_long_steps():
    times = np.array([0.002, 0.010, 0.020, 0.100])
    predicted = np.array([0.003, 0.011, 0.018, 0.100])
    regions = np.array(["decode", "decode", "prefill", "mixed"])
    all_steps = percentage_errors(times, predicted, regions)
    assert all_steps["decode"] == pytest.approx(30.0)  # (50% + 10%) / 2
    assert all_steps["prefill"] == pytest.approx(10.0)
    assert all_steps["all"] == pytest.approx(17.5)
    long = percentage_errors(times, predicted, regions, min_time=0.005)
    assert long["decode"] == pytest.approx(10.0) and long["all"] == pytest.approx(20 / 3, abs=0.01)


def test_measured_range_and_extrapolation_flag(fitted):
    cal, *_ = fitted
    r = cal.fitted.measured_range
    assert (r.max_batched_tokens, r.max_num_seqs, r.max_context) == (2048, 128, 2048)
    model = FittedModel(
        TRUE,
        WORK,
        MeasuredRange(max_batched_tokens=512, max_num_seqs=8, max_context=1024, max_kv_tokens=4096),
    )
    assert not model.is_extrapolated(np.array([512]), np.array([0]))
    assert model.is_extrapolated(np.array([513]), np.array([0]))  # too many tokens
    assert model.is_extrapolated(np.ones(9), np.zeros(9))  # too many sequences
    assert model.is_extrapolated(np.array([1]), np.array([1024]))  # context 1025
    assert model.is_extrapolated(np.ones(8), np.full(8, 600))  # 4808 KV tokens


def test_decode_runs_equal_repeated_steps():
    model = FittedModel(
        TRUE, WORK, MeasuredRange(max_batched_tokens=1, max_num_seqs=1, max_context=1, max_kv_tokens=1)
    )
    cached = np.array([10, 500, 1999])
    runs = model.decode_run_times(cached, 5)
    singles = [model.step_time(np.ones(3), cached + j) for j in range(5)]
    np.testing.assert_allclose(runs, singles, rtol=1e-12)


def test_calibration_yaml_round_trips(fitted):
    cal, *_, out = fitted
    loaded = load_calibration(out)
    assert loaded.model_dump() == cal.model_dump()
    assert loaded.provenance == "measured" and loaded.source["measurements"].endswith("synthetic.csv")
    new, cached = np.array([64, 1, 1]), np.array([0, 300, 800])
    a = FittedModel(cal.fitted.coefficients, cal.fitted.work, cal.fitted.measured_range).step_time(
        new, cached
    )
    b = FittedModel(loaded.fitted.coefficients, loaded.fitted.work, loaded.fitted.measured_range).step_time(
        new, cached
    )
    assert a == b


def test_layout_round_trip():
    rows = [(512, 0), (1, 64), (1, 64), (1, 65)]
    assert encode_layout(rows) == "512+0 1+64*2 1+65"
    assert decode_layout("512+0 1+64*2 1+65") == rows


# --- bad input ------------------------------------------------------------------------------
def _frame(tmp_path) -> pd.DataFrame:
    return pd.read_csv(synthetic_csv(tmp_path / "good.csv"))


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda f: f.drop(columns=["layout"]), "missing column(s) layout"),
        (lambda f: f.assign(median_s=f["median_s"].where(f.index != 3)), "median_s is empty or NaN on 1 row"),
        (lambda f: f.head(10), "10 measured steps are too few"),
        (lambda f: f.assign(region=f["region"].where(f.index != 0, "warmup")), "unknown region(s) warmup"),
        (lambda f: f.assign(layout=f["layout"].where(f.index != 5, "12x3")), "layout of data row 6"),
        (lambda f: f.assign(median_s=f["median_s"].where(f.index != 1, -1.0)), "median_s must be a positive"),
    ],
)
def test_bad_measurements_are_config_errors(tmp_path, damage, expected):
    path = tmp_path / "bad.csv"
    damage(_frame(tmp_path)).to_csv(path, index=False)
    with pytest.raises(ConfigError) as err:
        load_measurements(path)
    assert expected in str(err.value)


def test_calibrate_cli_bad_file_exits_2(tmp_path, capsys):
    path = tmp_path / "bad.csv"
    _frame(tmp_path).drop(columns=["median_s"]).to_csv(path, index=False)
    assert main(["calibrate", str(path), "--out", str(tmp_path / "x.yaml")]) == 2
    err = capsys.readouterr().err
    assert "missing column(s) median_s" in err and "Traceback" not in err


def _scenario(calibration: Path, **deployment) -> dict:
    return {
        "model": "llama-100m",
        "hardware": {
            "name": "cpu-host",
            "memory_gib": 2,
            "memory_bandwidth_gbps": 40,
            "tflops": {"fp32": 0.25},
            "interconnect_gbps": 10,
        },
        "deployment": {"weight_dtype": "fp32", "kv_dtype": "fp32", "activation_reserve_gb": 0, **deployment},
        "execution": {"calibration": str(calibration)},
        "workload": {
            "arrival": {"process": "poisson", "rate": 1},
            "num_requests": 5,
            "classes": [
                {
                    "name": "c",
                    "prompt_tokens": {"dist": "constant", "value": 50},
                    "output_tokens": {"dist": "constant", "value": 5},
                }
            ],
        },
    }


def test_scenario_uses_a_matching_calibration(fitted):
    *_, out = fitted
    model = execution_model(parse_scenario(_scenario(out)))
    assert isinstance(model, FittedModel) and model.describe()["provenance"] == "measured"


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"model": "llama-20m"}, "model 'llama-100m' but the scenario's model is 'llama-20m'"),
        (
            {"deployment": {"weight_dtype": "fp16", "kv_dtype": "fp16"}},
            "weight dtype 'fp32' but deployment.weight_dtype is 'fp16'",
        ),
        ({"hardware": "a100-80gb"}, "hardware 'cpu-host' but the scenario's hardware is 'a100-80gb'"),
    ],
)
def test_mismatched_calibration_is_a_config_error(fitted, change, expected):
    *_, out = fitted
    data = _scenario(out) | change
    with pytest.raises(ConfigError) as err:
        execution_model(parse_scenario(data))
    assert expected in str(err.value)


def test_calibration_and_roofline_settings_are_exclusive(fitted):
    *_, out = fitted
    data = _scenario(out)
    data["execution"]["roofline"] = {"efficiency": {"memory_bandwidth": 0.5}}
    with pytest.raises(ConfigError, match="either roofline: settings or a calibration: file"):
        parse_scenario(data)


def test_missing_calibration_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="execution.calibration: file 'nope.yaml' not found"):
        execution_model(parse_scenario(_scenario(Path("nope.yaml"))))


def test_malformed_calibration_names_the_field(tmp_path, fitted):
    *_, out = fitted
    text = out.read_text().replace("provenance: measured", "provenance: guessed")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match="invalid calibration file") as err:
        load_calibration(bad)
    assert "provenance" in str(err.value)


# --- the shipped files ----------------------------------------------------------------------
SHIPPED = sorted((REPO_ROOT / "calibration" / "profiles").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_calibrations_state_their_provenance(path):
    cal = load_calibration(path)
    assert cal.expected_error
    if cal.provenance == "measured":
        assert (REPO_ROOT / cal.source["measurements"]).is_file()
        assert cal.source["measured_on"] and cal.source["torch_version"] and cal.source["date"]
        assert cal.fitted.fit_error["heldout_mape_percent"]["all"] is not None
    else:
        assert cal.source["references"]


def test_served_steps_pull_the_fit_towards_the_shapes_serving_runs(tmp_path, capsys):
    """Decode steps of 4 rows that run 30% slower than the profile's trend (as the CPU engine's
    matrix-vector path does): adding them as served steps moves the fit's prediction towards them."""
    profile = synthetic_csv(tmp_path / "profile.csv")
    rng = np.random.default_rng(1)
    steps = []
    for _ in range(300):
        cached = rng.integers(200, 600, size=4)
        t = predict(TRUE.vector(), WORK, StepFeatures.of(np.ones((1, 4), int), cached[None, :]))[0] * 1.3
        steps.append({"new_tokens": "1 1 1 1", "cached_tokens": " ".join(map(str, cached)), "execute_s": t})
    served = tmp_path / "engine_steps.csv"
    pd.DataFrame(steps).to_csv(served, index=False)

    assert main(["calibrate", str(profile), "--out", str(tmp_path / "plain.yaml")]) == 0
    assert main(["calibrate", str(profile), "--served-steps", str(served), "--out", str(tmp_path / "mix.yaml")]) == 0
    merged = load_measurements(tmp_path / "mix-served.csv")
    assert len(merged.frame) == len(load_measurements(profile).frame) + len(steps)

    new, cached = np.ones((1, 4), int), np.full((1, 4), 400)
    truth = predict(TRUE.vector(), WORK, StepFeatures.of(new, cached))[0] * 1.3
    errors = {}
    for name in ("plain", "mix"):
        cal = load_calibration(tmp_path / f"{name}.yaml")
        errors[name] = abs(predict(cal.fitted.coefficients.vector(), WORK, StepFeatures.of(new, cached))[0] / truth - 1)
    assert errors["plain"] > 0.15 and errors["mix"] < errors["plain"] / 2, errors

    bad = tmp_path / "bad.csv"
    bad.write_text("new_tokens,seconds\n1,0.1\n")
    capsys.readouterr()
    assert main(["calibrate", str(profile), "--served-steps", str(bad), "--out", str(tmp_path / "b.yaml")]) == 2
    assert "cached_tokens" in capsys.readouterr().err and not (tmp_path / "b.yaml").exists()


def test_kernel_regimes_price_only_their_steps():
    """matvec_read_factor applies to steps of at most matvec_max_tokens tokens, and
    small_matmul_flops_factor to steps of at most small_matmul_max_tokens; other steps are as
    without them."""
    work = StepWork.from_spec(SPEC, "fp32", "fp32", matvec_max_tokens=4, small_matmul_max_tokens=32)
    tokens = [1, 4, 5, 32, 33, 512]
    features = StepFeatures.of([[n] for n in tokens], [[100] for _ in tokens])
    base = TRUE.model_copy(update={"matvec_read_factor": 1.0})
    both = TRUE.model_copy(update={"matvec_read_factor": 0.5, "small_matmul_flops_factor": 0.5})
    before, after = predict(base.vector(), work, features), predict(both.vector(), work, features)
    faster_reads, slower_flops = after[:2] < before[:2], after[2:4] > before[2:4]
    assert faster_reads.all() and slower_flops.all()
    np.testing.assert_allclose(after[4:], before[4:])
    # without the regimes (GPU files, older profiles) the factors change nothing past one token
    plain = predict(both.vector(), WORK, features)
    np.testing.assert_allclose(plain[1:], predict(base.vector(), WORK, features)[1:])


def test_older_files_name_the_matvec_factor_one_token_read_factor():
    fields = TRUE.model_dump()
    fields["one_token_read_factor"] = fields.pop("matvec_read_factor")
    assert Coefficients(**fields).matvec_read_factor == TRUE.matvec_read_factor
