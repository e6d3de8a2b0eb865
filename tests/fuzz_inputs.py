"""Hypothesis strategies for malformed user input, and the outcome every input must have.

Used by tests/test_fuzz.py (the properties) and benchmarks/fuzz_tally.py (counting outcomes). The
property is the same everywhere: reading an input either succeeds or raises ConfigError (exit code
2 with one message through the CLI), never any other exception.
"""

from __future__ import annotations

import copy
import itertools
import json
import tempfile
import traceback
from pathlib import Path

import numpy as np
import yaml
from hypothesis import strategies as st

from simulator.common.errors import ConfigError
from simulator.common.files import read_yaml_mapping
from simulator.common.limits import MAX_TOKENS
from simulator.scenario import parse_scenario
from simulator.scenario.build import build_deployment
from simulator.workload import generate, traces

ROOT = Path(__file__).resolve().parent.parent
WORK = Path(tempfile.mkdtemp(prefix="llmsim-fuzz-"))  # one folder for the files examples write
SMALL_RUN = 2000  # valid mutated scenarios draw their requests when they have at most this many

# --- outcomes ---------------------------------------------------------------------------------


def outcome(fn, *args) -> tuple[str, str]:
    """("ok", "") or ("config_error", message) or ("traceback", the traceback text)."""
    try:
        fn(*args)
    except ConfigError as exc:
        return "config_error", str(exc)
    except Exception:  # noqa: BLE001 - any other exception is what the property forbids
        return "traceback", traceback.format_exc()
    return "ok", ""


# --- scenarios --------------------------------------------------------------------------------

HARDWARE = {"name": "gpu-x", "memory_gib": 80, "memory_bandwidth_gbps": 2000,
            "tflops": {"fp16": 300, "bf16": 300, "fp8": 600}, "interconnect_gbps": 300,
            "interconnect_latency_us": 2, "host_link_gbps": 32, "price_per_hour": 2.5}  # fmt: skip
MODEL = {"name": "m", "num_layers": 16, "hidden_size": 2048, "num_heads": 32, "num_kv_heads": 8,
         "intermediate_size": 8192, "vocab_size": 32000, "max_context": 4096}  # fmt: skip
CLASS = {"name": "chat", "weight": 1, "priority": 0,
         "prompt_tokens": {"dist": "lognormal", "mean": 300, "std": 100},
         "output_tokens": {"dist": "uniform", "low": 10, "high": 60}, "slo": {"ttft_ms": 500}}  # fmt: skip
CSV_TRACE = ROOT / "tests" / "data" / "burstgpt_sample.csv"

VALID_SCENARIOS = [
    {"model": "llama-3-8b", "hardware": "a100-80gb",
     "deployment": {"replicas": 2, "tensor_parallel": 1, "gpu_memory_utilization": 0.9},
     "scheduler": {"policy": "vllm", "max_num_seqs": 64, "block_size": 16},
     "workload": {"arrival": {"process": "poisson", "rate": 2.0}, "num_requests": 50, "classes": [CLASS]}},
    {"model": MODEL, "hardware": HARDWARE, "seed": 3,
     "execution": {"roofline": {"efficiency": {"memory_bandwidth": 0.8}, "overhead": {"constant_s": 0.001}}},
     "workload": {"arrival": {"process": "gamma", "rate": 5, "cv": 2}, "duration_s": 20, "classes": [CLASS]},
     "run": {"max_time_s": 100}},
    {"model": "llama-3-8b", "hardware": "h100-sxm",
     "workload": {"arrival": {"process": "diurnal", "rate": 3, "period_s": 600,
                              "profile": {"kind": "table", "rates": [1, 2, 4, 2]}},
                  "duration_s": 300, "classes": [CLASS]},
     "autoscaling": {"target": 8, "interval_s": 10, "min_replicas": 1, "max_replicas": 4}},
    {"model": "llama-3-8b", "hardware": "a100-80gb",
     "disaggregation": {"prefill": {"replicas": 1, "hardware": HARDWARE}, "decode": {"replicas": 2},
                        "link_gbps": 50, "link_latency_us": 10},
     "workload": {"arrival": {"process": "trace", "path": str(CSV_TRACE), "format": "burstgpt",
                              "models": ["ChatGPT"], "rate": 2.0}}},
    {"model": "llama-3-8b", "hardware": "a10g",
     "scheduler": {"speculative": {"draft_model": {**MODEL, "num_layers": 2}, "num_speculative_tokens": 3,
                                   "acceptance_rate": 0.7}},
     "plan": {"search": {"hardware": ["a10g", "l4"], "tensor_parallel": [1, 2], "replicas": {"min": 1, "max": 4}},
              "slo": {"p90_ttft_ms": 800}, "prices": {"a10g": 1.0}},
     "workload": {"arrival": {"process": "constant", "rate": 1}, "num_requests": 20,
                  "classes": [{**CLASS, "prompt_tokens": {"dist": "normal", "mean": 200, "std": 50}}]}},
]  # fmt: skip

BAD_VALUES = [
    float("nan"), float("inf"), float("-inf"), -1, 0, -0.0, 1e-300, 1e308, 10**30, -(10**30), 2**63, 2**64,
    4097, 100_000_000, 1e12, 0.5, True, False, None, "", "x", "1e9", "nan", [], {}, [1, 2], {"a": 1},
    "a" * 5000, "🙂\x00", 12345678901234567890,
]  # fmt: skip


def _paths(node, prefix=()) -> list[tuple]:
    """Every place in a nested mapping a value sits at (keys and list indices)."""
    found = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in items:
        found.append((*prefix, key))
        found += _paths(value, (*prefix, key))
    return found


def _nested(depth: int):
    value = 1
    for _ in range(depth):
        value = {"a": value}
    return value


@st.composite
def mutated_scenarios(draw) -> dict:
    """A valid scenario with one to three mutations: a bad value, a key removed or misspelt, an
    unknown key, a deep nesting."""
    data = copy.deepcopy(draw(st.sampled_from(VALID_SCENARIOS)))
    data["name"] = "fuzz"
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(data)
        path = draw(st.sampled_from(paths))
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        key = path[-1]
        ops = [
            "plausible",
            "plausible",
            "plausible",
            "value",
            "value",
            "number",
            "delete",
            "typo",
            "unknown",
            "deep",
        ]
        op = draw(st.sampled_from(ops))
        value = parent[key]
        if op == "plausible":  # a nearby number, which usually keeps the scenario valid
            if isinstance(value, int | float) and not isinstance(value, bool):
                factor = draw(st.sampled_from([0.5, 0.9, 1.1, 2, 4]))
                parent[key] = type(value)(value * factor) if value * factor > 0 else value
        elif op == "value":
            parent[key] = draw(st.sampled_from(BAD_VALUES))
        elif op == "number":
            parent[key] = draw(
                st.one_of(st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True))
            )
        elif op == "delete":
            del parent[key]
        elif op == "typo" and isinstance(parent, dict):
            parent[str(key)[:-1] + draw(st.sampled_from("sxz_"))] = parent.pop(key)
        elif op == "unknown" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=12))] = draw(st.sampled_from(BAD_VALUES))
        elif op == "deep":
            parent[key] = _nested(draw(st.integers(10, 200)))
    return data


def _expected_requests(scenario) -> float:
    w = scenario.workload
    if w.arrival.process == "trace":
        return 0.0
    bound = w.num_requests or float("inf")
    rate = getattr(w.arrival, "rate", None) or 10.0
    if w.duration_s is not None:
        bound = min(bound, rate * w.duration_s * 2)
    return bound


def check_scenario(data: dict) -> None:
    """Parse, build and (when small) draw the requests of a scenario mapping."""
    scenario = parse_scenario(data, source="fuzz.yaml", base_dir=ROOT)
    deployment = build_deployment(scenario)
    if _expected_requests(scenario) <= SMALL_RUN:
        generate(scenario.workload, seed=scenario.seed, max_context=deployment.max_model_len, base_dir=ROOT)


# --- YAML files -------------------------------------------------------------------------------

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**80), 2**80), st.floats(), st.text(max_size=20),
)  # fmt: skip
yaml_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)

yaml_mappings = st.dictionaries(st.text(max_size=8), yaml_values, min_size=1, max_size=6)

_FRAGMENTS = [
    "a: 1\n", "a: 2\n", "  b: [1, 2]\n", "&x [1, 2, 3]", "*x", "<<: *x\n", "? [1]\n: 2\n", "- - - -\n",
    "!!python/object:os.system ls\n", "9" * 5000, "0x" + "f" * 400, "2023-02-30", "[" * 100, "{" * 80,
    "\t", ":\n", "'unclosed", '"\\UFFFFFFFF"', '"\\U00110000"', "%YAML 1.1\n---\n", "...\n", "\ufeff",
    "!!binary zz\n", ".inf", ".nan",
    (
        "k: &a [x, x, x, x, x, x, x, x, x, x]\nl: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "m: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nn: [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    ),
]  # fmt: skip


@st.composite
def yaml_documents(draw) -> bytes:
    """Random YAML: a dumped random value with fragments spliced in, or raw bytes."""
    kind = draw(st.sampled_from(["dumped", "dumped", "spliced", "bytes", "text"]))
    if kind == "bytes":
        return draw(st.binary(max_size=400))
    if kind == "text":
        return draw(st.text(max_size=300)).encode("utf-8", "surrogatepass")
    text = yaml.safe_dump(draw(st.one_of(yaml_mappings, yaml_values)), allow_unicode=True)
    if kind == "spliced":
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(text)))
            text = text[:at] + draw(st.sampled_from(_FRAGMENTS)) + text[at:]
    return text.encode("utf-8", "surrogatepass")


_files = itertools.count()


def write_file(name: str, data: bytes) -> Path:
    """A new file per example: readers cache parsed files by path, size and modification time."""
    path = WORK / f"{next(_files)}-{name}"
    path.write_bytes(data)
    return path


def check_yaml(data: bytes) -> None:
    read_yaml_mapping(write_file("doc.yaml", data), "scenario")


# --- traces -----------------------------------------------------------------------------------

_CELLS = [
    "0", "1", "12", "512", "1.0", "2.5", "-1", "-0", "1e19", "9.3e18", "1e300", "-1e300", "1e-300", "nan", "inf",
    "-inf", "", " ", "abc", "9" * 5000, "0x10", "1_000", "10000001", "10000000", "2023-11-16 18:15:46.6805900",
    "2023-11-16 18:15:4x", "9999-12-31 23:59:59", "1677-09-21 00:12:44", '"', '""', "a,b", "\u00e9", "\x00",
    "ChatGPT", "GPT-4", "API log", "Conversation log",
]  # fmt: skip
HEADERS = {
    "csv": ["arrival_time", "prompt_tokens", "output_tokens"],
    "azure": ["TIMESTAMP", "ContextTokens", "GeneratedTokens"],
    "burstgpt": ["Timestamp", "Model", "Request tokens", "Response tokens", "Total tokens", "Log Type"],
}


def _good_cell(draw, column: str, row: int) -> str:
    """A plausible cell of `column` in data row `row`."""
    if column == "TIMESTAMP":
        return (
            f"2023-11-16 18:{row % 60:02d}:{draw(st.integers(0, 59)):02d}.{draw(st.integers(0, 9999999)):07d}"
        )
    if column in ("arrival_time", "Timestamp"):
        return str(draw(st.one_of(st.integers(0, 10**6), st.floats(0, 1e6))))
    if column == "Model":
        return draw(st.sampled_from(["ChatGPT", "GPT-4"]))
    if column == "Log Type":
        return draw(st.sampled_from(["Conversation log", "API log"]))
    return str(draw(st.integers(0 if column in ("Request tokens", "Response tokens") else 1, 5000)))


@st.composite
def csv_traces(draw) -> tuple[str, bytes]:
    """(format, file bytes): a header (sometimes damaged) and rows of mostly plausible cells."""
    fmt = draw(st.sampled_from(sorted(HEADERS)))
    header = list(HEADERS[fmt])
    if draw(st.integers(0, 9)) == 0:
        header[draw(st.integers(0, len(header) - 1))] = draw(st.sampled_from(["", "x", "TIMESTAMP "]))
    n_rows = draw(st.integers(0, 12))
    lines = [",".join(header)]
    for row in range(n_rows):
        cells = [
            _good_cell(draw, column, row) if draw(st.integers(0, 19)) else draw(st.sampled_from(_CELLS))
            for column in header
        ]
        if draw(st.integers(0, 19)) == 0:  # a field missing or one too many
            cells = cells[:-1] if draw(st.booleans()) else [*cells, "7"]
        lines.append(",".join(cells))
    text = "\n".join(lines) + draw(st.sampled_from(["\n", "", "\n\n"]))
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 14)) == 0:
        at = draw(st.integers(0, len(data)))
        data = data[:at] + b"\xff\xfe" + data[at:]
    return fmt, data


_JSON_VALUES = [
    0,
    1,
    12,
    512,
    2.5,
    -1,
    10**19,
    10**30,
    1e300,
    -1e300,
    True,
    None,
    "12",
    [],
    {},
    [1, [2]],
    1e-300,
]


@st.composite
def mooncake_traces(draw) -> bytes:
    keys = ["timestamp", "input_length", "output_length", "hash_ids"]
    lines = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["good", "good", "values", "raw"]))
        record = {"timestamp": draw(st.integers(0, 10**6)), "input_length": draw(st.integers(1, 3000)),
                  "output_length": draw(st.integers(1, 500)), "hash_ids": [0, 1]}  # fmt: skip
        if kind == "values":
            key = draw(st.sampled_from(keys))
            record[key] = draw(st.sampled_from([*_JSON_VALUES, [10**20], ["a"], [True]]))
            if draw(st.booleans()):
                del record[draw(st.sampled_from(keys))]
        line = json.dumps(record)
        if kind == "raw":
            line = draw(
                st.sampled_from(["{", "[]", "NaN", "1" * 5000, "[" * 3000, '{"timestamp": Infinity}', ""])
            )
        lines.append(line)
    return ("\n".join(lines) + "\n").encode()


def check_trace(fmt: str, data: bytes) -> None:
    """Read a trace; a trace that reads must hold what the simulator relies on."""
    trace = traces.read_trace(write_file(f"trace.{fmt}", data), fmt)
    assert (
        trace.arrival[0] == 0 and np.all(np.diff(trace.arrival) >= 0) and np.all(np.isfinite(trace.arrival))
    )
    for tokens in (trace.prompt_tokens, trace.output_tokens):
        assert tokens.dtype == np.int64 and tokens.min() >= 1 and tokens.max() <= MAX_TOKENS
