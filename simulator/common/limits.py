"""Ceilings on every number a user gives (scenarios, inline specs, traces, YAML files).

Each bound is far beyond any real deployment or trace, yet low enough that the simulator never
overflows an int64, allocates more memory than a workstation has, or runs for days on a typo.
A value past one is rejected with the bound named, so a user knows what is allowed. Annotated
types at the bottom carry the bounds into pydantic fields.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

DAY_S = 86_400.0
YEAR_S = 365.25 * DAY_S

# --- fleet ------------------------------------------------------------------------------------
MAX_REPLICAS = 4096  # replicas of one pool: a large region's whole fleet of one model
MAX_TENSOR_PARALLEL = 64  # GPUs per replica: eight 8-GPU nodes
MAX_BATCH_SEQS = 1 << 20  # sequences in one step (vLLM's default is 256)
MAX_BLOCK_SIZE = 1 << 16  # tokens per KV block (vLLM uses 16 to 128)
# Every replica lists its free KV blocks (about 36 bytes each in Python): these bound that memory
# to ~0.6 GB per replica and ~10 GB in all (4096 H200 replicas of an 8B model hold ~2e8 blocks).
MAX_KV_BLOCKS_PER_REPLICA = 1 << 24
MAX_KV_BLOCKS = 1 << 28
MIN_AUTOSCALING_INTERVAL_S = 0.1  # an autoscaler evaluates once per interval over the whole run

# --- traffic ----------------------------------------------------------------------------------
MAX_NUM_REQUESTS = 50_000_000  # requests of one run: each becomes a Python object (~1 KB)
MAX_DURATION_S = 30 * DAY_S  # a workload's duration, a diurnal period: a month of traffic
MAX_TIME_S = 10 * YEAR_S  # any simulated clock or trace span: a decade
MAX_RATE = 1e6  # requests per second, about 100x the busiest public LLM API
MAX_TOKENS = 10_000_000  # tokens of one prompt, output, context or step budget: 10M-token windows
MAX_CONTEXT = 1 << 24  # a model's native context window (Llama 4 Scout's is 10,485,760 tokens)
MAX_CLASSES = 100  # request classes: every class draws lengths for every request
MAX_PRIORITY = 1_000_000  # |priority| of a request class
MAX_WEIGHT = 1e9  # relative share of a request class
MAX_CV = 100.0  # coefficient of variation of gamma gaps (shape 1e-4); far burstier than any trace
MIN_CV = 1e-3  # below it gamma gaps are constant ones in all but name
MAX_TIME_SCALE = 1e3  # stretch factor of a replayed trace
MIN_TIME_SCALE = 1e-6
MAX_PROFILE_SLOTS = 1_000_000  # slots of a diurnal table or trace profile (per-second for 11 days)
MAX_THINNING_DRAWS = 500_000_000  # candidate arrivals a diurnal profile may draw (8 bytes each, chunked)
MAX_TIMESTAMP_S = 1e10  # a trace's absolute time in seconds (Unix time of the year 2286)
MAX_TRACE_BYTES = 4 << 30  # a trace file (the largest public traces are a few hundred MB)
MAX_SEED = 2**63 - 1

# --- hardware and models ----------------------------------------------------------------------
MAX_MEMORY_GIB = 100e12 / 2**30  # memory of one accelerator: 100 TB
MAX_MEMORY_GB = 100e3  # the same 100 TB for sizes given in GB (reserves, swap space)
MAX_BANDWIDTH_GBPS = 1e6  # memory or link bandwidth: 1 PB/s, ~100x today's HBM
MAX_TFLOPS = 1e6  # dense peak per dtype: an exaFLOP/s chip
MAX_LATENCY_US = 1e7  # a link's latency per hop or transfer: ten seconds
MAX_PRICE_PER_HOUR = 1e5  # USD per GPU-hour
MAX_STEP_OVERHEAD_S = 60.0  # host time added to one engine step
MAX_LAYERS = 4096
MAX_WIDTH = 1 << 20  # hidden, intermediate and head sizes
MAX_HEADS = 1 << 16
MAX_VOCAB = 10_000_000
MAX_EXPERTS = 1 << 16  # routed experts of one layer (DeepSeek-V3 has 256)
MAX_ROPE_THETA = 1e12
MAX_PARAMS = 10**14  # parameters of a model part given as a count (a vision encoder): 100 trillion
MAX_GPUS_PER_NODE = 576  # GPUs joined by one NVLink domain (NVIDIA's largest announced: NVL576)

# --- studies ----------------------------------------------------------------------------------
MAX_SEEDS = 1000  # seeds (replications) per candidate or point
MAX_SEARCH_VALUES = 100  # values of one searched setting; a plan tries their every combination
MAX_GROWTH = 1e3  # a plan's load multiplier
MAX_SLO_MS = 1e9  # a latency objective: eleven days

# --- YAML files -------------------------------------------------------------------------------
MAX_YAML_BYTES = 16 << 20  # a scenario or calibration file: the largest shipped one is a few KB
MAX_YAML_DEPTH = 64  # nesting of mappings and lists; scenarios use under 10
MAX_YAML_NODES = 1_000_000  # values once aliases are expanded: stops "billion laughs" files

# --- pydantic field types ---------------------------------------------------------------------
Replicas = Annotated[int, Field(gt=0, le=MAX_REPLICAS)]
TensorParallel = Annotated[int, Field(gt=0, le=MAX_TENSOR_PARALLEL)]
NumRequests = Annotated[int, Field(gt=0, le=MAX_NUM_REQUESTS)]
Tokens = Annotated[int, Field(gt=0, le=MAX_TOKENS)]
TokenMean = Annotated[float, Field(gt=0, le=MAX_TOKENS)]
TokenSpread = Annotated[float, Field(ge=0, le=MAX_TOKENS)]
Rate = Annotated[float, Field(gt=0, le=MAX_RATE, description="requests per second")]
Duration = Annotated[float, Field(gt=0, le=MAX_DURATION_S, description="seconds")]
Seconds = Annotated[float, Field(ge=0, le=MAX_TIME_S)]
PositiveSeconds = Annotated[float, Field(gt=0, le=MAX_TIME_S)]
Price = Annotated[float, Field(ge=0, le=MAX_PRICE_PER_HOUR, description="USD per GPU-hour")]
PositivePrice = Annotated[float, Field(gt=0, le=MAX_PRICE_PER_HOUR, description="USD per GPU-hour")]
Bandwidth = Annotated[float, Field(gt=0, le=MAX_BANDWIDTH_GBPS, description="GB/s")]
LatencyUs = Annotated[float, Field(ge=0, le=MAX_LATENCY_US, description="microseconds")]
MemoryGB = Annotated[float, Field(ge=0, le=MAX_MEMORY_GB, description="GB")]
Seeds = Annotated[int, Field(gt=0, le=MAX_SEEDS)]
SloMs = Annotated[float, Field(gt=0, le=MAX_SLO_MS, description="milliseconds")]
