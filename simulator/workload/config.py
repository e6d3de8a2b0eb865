"""The `workload:` section of a scenario: an arrival process and a mix of request classes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)

from simulator.common.errors import ConfigError
from simulator.metrics.slo import SLO
from simulator.workload.arrivals import Arrival, TraceArrival
from simulator.workload.lengths import LengthDist


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RequestClass(_Strict):
    """One kind of request: its share of arrivals, its lengths, its priority and its SLOs."""

    name: str = Field(min_length=1)
    weight: PositiveFloat = 1.0  # relative share of arrivals
    prompt_tokens: LengthDist | None = None  # None: take the trace's lengths
    output_tokens: LengthDist | None = None
    priority: int = 0  # lower is served first by priority policies
    slo: SLO = SLO()


class WorkloadConfig(_Strict):
    """The `workload:` section of a scenario.

    Generation stops at `duration_s` (arrivals at or after it are dropped) or after `num_requests`,
    whichever comes first. A trace also stops at its own end, so it needs neither.
    """

    arrival: Arrival
    classes: list[RequestClass] = Field(default_factory=lambda: [RequestClass(name="default")], min_length=1)
    duration_s: PositiveFloat | None = None
    num_requests: PositiveInt | None = None

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
