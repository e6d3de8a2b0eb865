"""The server's Prometheus metrics: latency histograms and the engine's load, per model.

Latencies follow the project's one definition (simulator.metrics): TTFT from arrival (the HTTP
request coming in) to the first token, ITL the gap between consecutive tokens, E2E arrival to
the last token; all on the engine clock. Each server has its own registry, so several servers
in one process (tests) do not collide.
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

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0)  # fmt: skip


class ServerMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, model_name: str):
        self.registry = CollectorRegistry()
        labels = ["model_name"]
        r = self.registry
        self._ttft = Histogram("llmsim_time_to_first_token_seconds", "Arrival to first token",
                               labels, buckets=_LATENCY_BUCKETS, registry=r)
        self._itl = Histogram("llmsim_inter_token_latency_seconds", "Gap between consecutive tokens",
                              labels, buckets=_LATENCY_BUCKETS, registry=r)
        self._e2e = Histogram("llmsim_e2e_request_latency_seconds", "Arrival to last token of finished requests",
                              labels, buckets=_LATENCY_BUCKETS, registry=r)
        self._running = Gauge("llmsim_num_requests_running", "Requests in the running batch", labels, registry=r)
        self._waiting = Gauge("llmsim_num_requests_waiting", "Requests queued in the engine", labels, registry=r)
        self._kv = Gauge("llmsim_kv_cache_usage_ratio", "Fraction of KV-cache blocks in use", labels, registry=r)
        self._prompt = Counter("llmsim_prompt_tokens", "Prompt tokens of admitted requests", labels, registry=r)
        self._generated = Counter("llmsim_generation_tokens", "Generated tokens", labels, registry=r)
        self._finished = Counter("llmsim_request_success", "Finished requests by finish reason",
                                 [*labels, "finished_reason"], registry=r)  # fmt: skip
        self.model_name = model_name

    def observe_tokens(self, seq: Sequence, start: int) -> None:
        """Tokens `start`.. of `seq` were just produced."""
        m, times = self.model_name, seq.token_times
        if start == 0 and times:
            self._ttft.labels(m).observe(times[0] - seq.arrival)
            self._prompt.labels(m).inc(seq.prompt_len)
        for i in range(max(start, 1), len(times)):
            self._itl.labels(m).observe(times[i] - times[i - 1])
        self._generated.labels(m).inc(len(times) - start)

    def observe_finish(self, seq: Sequence) -> None:
        if seq.finish_reason in ("length", "stop") and seq.token_times:
            self._e2e.labels(self.model_name).observe(seq.token_times[-1] - seq.arrival)
        self._finished.labels(self.model_name, seq.finish_reason or "unknown").inc()

    def set_state(self, engine) -> None:
        m = self.model_name
        self._running.labels(m).set(engine.scheduler.num_running)
        self._waiting.labels(m).set(engine.scheduler.num_waiting)
        self._kv.labels(m).set(engine.blocks.usage)

    def render(self) -> bytes:
        return generate_latest(self.registry)
