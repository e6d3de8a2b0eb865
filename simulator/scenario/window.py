"""Steady-state measurement by simulated time: `run.window`.

    run:
      window: {warmup_s: 60, measure_s: 600}   # or window: {} for the defaults below

Arrivals run for warm-up + measurement window + cool-down, whatever `workload.duration_s` or
`num_requests` say; only requests arriving inside the window are summarised (requests.csv marks
them in its `measured` column). A run's length is thus a span of simulated time, so planning
for a higher rate measures more requests instead of a shorter window. Defaults scale with the
rate and with the percentile that decides (q, e.g. 0.99 for a p99 SLO):

- measure_s = max(120 s, the time 50 / (1 - q) arrivals take): 5,000 requests for p99, 500 for p90;
- warmup_s = max(30 s, measure_s / 4); cooldown_s = max(30 s, measure_s / 10), so the window's last
  requests share the engine with later arrivals as the others did.

Stopping rule: after each simulation the verdict of `simulator.metrics.steady_state` is taken;
while it finds the warm-up too short (the warm-up is doubled) or a decisive percentile's interval
too wide to decide (the window is doubled), the run is repeated, at most `max_extensions` times.
The same seed draws the same first arrivals, so a longer run extends the shorter one. `plan` and
`sweep` measure every stationary workload this way (`window: {}` unless the scenario gives one).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat

from simulator.common.errors import ConfigError
from simulator.metrics.objectives import SLORule
from simulator.metrics.steady_state import REL_TOLERANCE, Decisive
from simulator.workload import ConstantArrival, GammaArrival, PoissonArrival

MIN_MEASURE_S = 120.0
MIN_WARMUP_S = 30.0
MIN_COOLDOWN_S = 30.0
TAIL_REQUESTS = 50  # arrivals beyond the decisive percentile the default window should hold


class MeasurementWindow(BaseModel):
    """Warm-up, measurement window and cool-down in simulated seconds; unset ones take defaults
    scaled to the arrival rate (simulator/scenario/window.py)."""

    model_config = ConfigDict(extra="forbid")

    warmup_s: NonNegativeFloat | None = Field(None, description="discarded from the start; default max(30 s, "
                                              "measure_s / 4)")
    measure_s: PositiveFloat | None = Field(None, description="measured; default max(120 s, 50 / (1 - q) arrivals "
                                            "for the decisive percentile q)")
    cooldown_s: NonNegativeFloat | None = Field(None, description="arrivals after the window, not measured; "
                                                "default max(30 s, measure_s / 10)")
    max_extensions: int = Field(2, ge=0, le=4, description="stopping rule: doublings of the window or warm-up "
                                "while steady state is not shown")
    rel_tolerance: float = Field(REL_TOLERANCE, gt=0, lt=1, description="a decisive percentile's 95% interval "
                                 "half-width, relative to it, that is narrow enough")


@dataclass(frozen=True)
class Window:
    warmup_s: float
    measure_s: float
    cooldown_s: float
    max_extensions: int = 2
    rel_tolerance: float = REL_TOLERANCE

    @property
    def start(self) -> float:
        return self.warmup_s

    @property
    def end(self) -> float:
        return self.warmup_s + self.measure_s

    @property
    def arrivals_s(self) -> float:
        return self.warmup_s + self.measure_s + self.cooldown_s

    def longer(self, factor: float) -> Window:
        """The same warm-up and cool-down around a window `factor` times as long."""
        return Window(self.warmup_s, self.measure_s * factor, self.cooldown_s, self.max_extensions,
                      self.rel_tolerance)

    def to_dict(self) -> dict:
        return asdict(self)


def stationary_rate(scenario) -> float | None:
    """The mean rate of a stationary arrival process; None for traces and diurnal profiles."""
    arrival = scenario.workload.arrival
    if isinstance(arrival, PoissonArrival | GammaArrival | ConstantArrival):
        return float(arrival.rate)
    return None


def decisive_percentiles(scenario, slo: dict[str, float] | None = None) -> list[Decisive]:
    """The percentiles that decide whether a run meets its SLOs: a plan's `slo:` limits, else the
    classes' SLOs at `slo_target.percentile`; without SLOs, TTFT and TPOT at that percentile."""
    if slo:
        rule = SLORule.from_limits(slo)
    else:
        rule = SLORule.from_classes({c.name: c.slo for c in scenario.workload.classes}, scenario.slo_target)
    seen: dict[str, Decisive] = {}
    for lim in rule.latency:
        if lim.metric == "itl":  # pooled gaps, not one value per request
            continue
        d = Decisive(lim.metric, lim.percentile, lim.limit_ms)
        if d.key not in seen or (d.limit_ms or 0) < (seen[d.key].limit_ms or 0):
            seen[d.key] = d
    if not seen:
        p = scenario.slo_target.percentile
        return [Decisive("ttft", p), Decisive("tpot", p)]
    return list(seen.values())


def resolve_window(scenario, decisive: list[Decisive], spec: MeasurementWindow | None = None) -> Window:
    """Numbers for the scenario's `run.window` (or `spec`), defaults scaled to its rate."""
    spec = spec or scenario.run.window or MeasurementWindow()
    rate = stationary_rate(scenario)
    if rate is None:
        raise ConfigError(
            f"run.window: the arrival process {scenario.workload.arrival.process!r} is not stationary; a measurement "
            "window needs poisson, gamma or constant arrivals (a trace or a diurnal profile is measured as a whole)"
        )
    q = max((d.percentile for d in decisive), default=90) / 100
    measure = spec.measure_s or max(MIN_MEASURE_S, TAIL_REQUESTS / (1 - q) / rate)
    warmup = spec.warmup_s if spec.warmup_s is not None else max(MIN_WARMUP_S, measure / 4)
    cooldown = spec.cooldown_s if spec.cooldown_s is not None else max(MIN_COOLDOWN_S, measure / 10)
    return Window(float(warmup), float(measure), float(cooldown), spec.max_extensions, spec.rel_tolerance)


def windowed(scenario, window: Window):
    """The scenario with arrivals for the whole window and a clock cap that ends runaway runs."""
    workload = scenario.workload.model_copy(update={"duration_s": window.arrivals_s, "num_requests": None})
    # a saturated run would otherwise drain its backlog for hours; its verdict is already known
    cap = scenario.run.max_time_s or window.end + max(120.0, window.cooldown_s + 60.0, window.measure_s / 2)
    run = scenario.run.model_copy(update={"max_time_s": cap})
    return scenario.model_copy(update={"workload": workload, "run": run})
