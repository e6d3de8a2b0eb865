"""The `workload:` section of a scenario: an arrival process and a mix of request classes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, ValidationError, model_validator

from simulator.common.errors import ConfigError
from simulator.common.limits import MAX_CLASSES, MAX_PRIORITY, MAX_WEIGHT, Duration, NumRequests
from simulator.common.strict_model import StrictModel
from simulator.metrics.slo import SLO
from simulator.workload.arrival_count import too_many_arrivals
from simulator.workload.arrivals import Arrival, DiurnalArrival, TraceArrival
from simulator.workload.diurnal import mean_rate
from simulator.workload.lengths import LengthDist


class RequestClass(StrictModel):
    """One kind of request: its share of arrivals, its lengths, its priority and its SLOs."""

    name: str = Field(min_length=1, max_length=200)
    weight: float = Field(1.0, gt=0, le=MAX_WEIGHT, description="relative share of arrivals")
    prompt_tokens: LengthDist | None = None  # None: take the trace's lengths
    output_tokens: LengthDist | None = None
    priority: int = Field(
        0, ge=-MAX_PRIORITY, le=MAX_PRIORITY, description="lower is served first by priority policies"
    )
    slo: SLO = SLO()


class WorkloadConfig(StrictModel):
    """The `workload:` section of a scenario.

    Generation stops at `duration_s` (arrivals at or after it are dropped) or after `num_requests`,
    whichever comes first. A trace also stops at its own end, so it needs neither.
    """

    arrival: Arrival
    classes: list[RequestClass] = Field(
        default_factory=lambda: [RequestClass(name="default")], min_length=1, max_length=MAX_CLASSES
    )
    duration_s: Duration | None = None
    num_requests: NumRequests | None = None

    @model_validator(mode="after")
    def _complete(self) -> WorkloadConfig:
        names = [c.name for c in self.classes]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"classes: names must be unique, repeated: {', '.join(duplicates)}")
        if isinstance(self.arrival, TraceArrival):
            return self
        if self.duration_s is None and self.num_requests is None:
            raise ValueError(
                f"arrival process {self.arrival.process!r} needs duration_s and/or num_requests "
                "(only a trace ends by itself)"
            )
        rate = mean_rate(self.arrival) if isinstance(self.arrival, DiurnalArrival) else self.arrival.rate
        problem = None if rate is None else too_many_arrivals(rate, self.duration_s, self.num_requests)
        if problem:  # a trace profile's own rate is known, and checked, once its file is read
            raise ValueError(problem)
        for i, cls in enumerate(self.classes):
            for name in ("prompt_tokens", "output_tokens"):
                if getattr(cls, name) is None:
                    raise ValueError(
                        f"classes[{i}] ({cls.name!r}): {name} is required unless arrival.process is "
                        "'trace', e.g. {dist: constant, value: 512}"
                    )
        return self


def load_workload(data: Mapping[str, Any], where: str = "workload") -> WorkloadConfig:
    """Validate a `workload:` mapping, turning pydantic's errors into one `ConfigError`."""
    try:
        return WorkloadConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join([where, *(str(p) for p in err["loc"])])
            message = err["msg"].removeprefix("Value error, ")
            shown = err["type"] != "missing" and not isinstance(err["input"], dict | list)
            problems.append(f"{loc}: {message}" + (f" (got {err['input']!r})" if shown else ""))
        raise ConfigError("; ".join(problems)) from None
