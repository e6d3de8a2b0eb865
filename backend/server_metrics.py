"""The server's Prometheus metrics: latencies as clients see them, and the engine's load.

Latencies follow the project's one definition (simulator.metrics), measured at the HTTP side:
arrival is the instant the request reached the app (before its body was read, parsed or
tokenized), and a token counts as delivered when the bytes carrying it were handed to the
connection. TTFT runs from arrival to the first token delivered, ITL is the gap between two
tokens of one choice delivered in turn, E2E from arrival to the last token of a finished
request. A request that is not streamed delivers every token with its one response, so its TTFT
is its E2E and it adds no ITL. Buckets are log-spaced, 20 per decade (each 12% wider than the
last) from 0.5 ms to 100 s, so quantiles read from them are within a few percent.

Two info gauges carry the engine's settings as labels (`llmsim_cache_config_info`: block size,
KV blocks, prefix caching; `llmsim_scheduler_config_info`: policy, max_num_seqs, token budget),
as vLLM's `vllm:cache_config_info` does. Counters and gauges come from the engine thread: tokens,
prompt tokens looked up in and found in the prefix cache, finished requests by reason, and the
running and waiting requests and KV-cache usage after every step, abort and finish. Each server
has its own registry, so several servers in one process (tests) do not collide.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from simulator.scheduling import Sequence

BUCKETS_PER_DECADE = 20
LATENCY_BUCKETS = tuple(float(f"{5e-4 * 10 ** (i / BUCKETS_PER_DECADE):.3g}") for i in range(107))


class ServerMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, model_name: str):
        self.registry = CollectorRegistry()
        labels = ["model_name"]
        r = self.registry
        self._ttft = Histogram("llmsim_time_to_first_token_seconds",
                               "Arrival of the request to its first token written to the client",
                               labels, buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self._itl = Histogram("llmsim_inter_token_latency_seconds",
                              "Gap between two tokens of one choice written to the client",
                              labels, buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self._e2e = Histogram("llmsim_e2e_request_latency_seconds",
                              "Arrival to the last token written, of requests that finished",
                              labels, buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self._running = Gauge("llmsim_num_requests_running", "Requests in the running batch", labels, registry=r)
        self._waiting = Gauge("llmsim_num_requests_waiting", "Requests queued in the engine", labels, registry=r)
        self._kv = Gauge("llmsim_kv_cache_usage_ratio", "Fraction of KV-cache blocks in use", labels, registry=r)
        self._prompt = Counter("llmsim_prompt_tokens", "Prompt tokens of admitted requests", labels, registry=r)
        self._generated = Counter("llmsim_generation_tokens", "Generated tokens", labels, registry=r)
        self._prefix_queries = Counter("llmsim_prefix_cache_queries", "Prompt tokens looked up in the prefix cache",
                                       labels, registry=r)  # fmt: skip
        self._prefix_hits = Counter("llmsim_prefix_cache_hits", "Prompt tokens found in the prefix cache",
                                    labels, registry=r)  # fmt: skip
        self._finished = Counter("llmsim_request_success", "Finished sequences by finish reason",
                                 [*labels, "finished_reason"], registry=r)  # fmt: skip
        self.model_name = model_name
        for gauge in (self._running, self._waiting, self._kv):
            gauge.labels(model_name).set(0)

    def describe_engine(self, engine) -> None:
        """Expose the engine's KV-cache and scheduler settings as labels of two info gauges, as
        vLLM does with `vllm:cache_config_info`, so that clients can read them."""
        config = engine.scheduler.config  # the policy's defaults resolved
        cache = {"block_size": engine.runner.block_size, "num_gpu_blocks": engine.runner.num_blocks,
                 "enable_prefix_caching": bool(config.enable_prefix_caching)}  # fmt: skip
        scheduler = {"policy": config.policy, "max_num_seqs": config.max_num_seqs,
                     "max_num_batched_tokens": config.token_budget(engine.max_model_len)}  # fmt: skip
        for name, doc, labels in (("llmsim_cache_config_info", "KV-cache settings", cache),
                                  ("llmsim_scheduler_config_info", "Scheduler settings", scheduler)):  # fmt: skip
            gauge = Gauge(name, doc, list(labels), registry=self.registry)
            gauge.labels(*(str(v) for v in labels.values())).set(1)

    # --- the HTTP side ---------------------------------------------------------------------
    def observe_ttft(self, seconds: float) -> None:
        self._ttft.labels(self.model_name).observe(seconds)

    def observe_itl(self, seconds: float) -> None:
        self._itl.labels(self.model_name).observe(seconds)

    def observe_e2e(self, seconds: float) -> None:
        self._e2e.labels(self.model_name).observe(seconds)

    # --- the engine thread -----------------------------------------------------------------
    def observe_tokens(self, seq: Sequence, start: int) -> None:
        """Tokens `start`.. of `seq` were just produced."""
        m = self.model_name
        if start == 0 and seq.token_times:
            self._prompt.labels(m).inc(seq.prompt_len)
            self._prefix_queries.labels(m).inc(seq.prompt_len)
            self._prefix_hits.labels(m).inc(seq.num_cached_prefix)
        self._generated.labels(m).inc(len(seq.token_times) - start)

    def observe_finish(self, seq: Sequence) -> None:
        self._finished.labels(self.model_name, seq.finish_reason or "unknown").inc()

    def set_state(self, engine) -> None:
        m = self.model_name
        self._running.labels(m).set(engine.scheduler.num_running)
        self._waiting.labels(m).set(engine.scheduler.num_waiting)
        self._kv.labels(m).set(engine.blocks.usage)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class DeliveryTimer:
    """Times one request's tokens as they are written to its client (on the engine clock)."""

    def __init__(self, metrics: ServerMetrics, arrival: float, clock):
        self.metrics, self.arrival, self.clock = metrics, arrival, clock
        self._last: dict[int, float] = {}  # choice -> when its latest token went out
        self._latest: float | None = None

    def delivered(self, choice: int) -> None:
        """A chunk carrying one token of `choice` was just written."""
        now = self.clock()
        if self._latest is None:
            self.metrics.observe_ttft(now - self.arrival)
        elif choice in self._last:
            self.metrics.observe_itl(now - self._last[choice])
        self._last[choice] = self._latest = now

    def finished(self) -> None:
        """The stream ended normally: its last token was the request's last."""
        if self._latest is not None:
            self.metrics.observe_e2e(self._latest - self.arrival)

    def whole_delivered(self) -> None:
        """A response that is not streamed was written: every token reached the client now."""
        now = self.clock()
        self.metrics.observe_ttft(now - self.arrival)
        self.metrics.observe_e2e(now - self.arrival)
