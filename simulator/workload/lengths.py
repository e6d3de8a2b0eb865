"""Length distributions of prompts and outputs: constant, uniform, normal, lognormal, empirical.

Each `draw` returns int64 tokens in [1, MAX_TOKENS]; continuous draws are rounded to the nearest
token (and a tail beyond MAX_TOKENS cut there; the context clips such requests anyway).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, model_validator

from simulator.common.limits import MAX_TOKENS, TokenMean, Tokens, TokenSpread
from simulator.common.strict_model import StrictModel
from simulator.workload import traces
from simulator.workload.paths import resolve_path

# Column names accepted as shorthands for the length files' columns.
LENGTH_COLUMN_ALIASES = {"prompt": "num_prefill_tokens", "output": "num_decode_tokens"}


class ConstantLength(StrictModel):
    dist: Literal["constant"]
    value: Tokens

    def draw(self, rng: np.random.Generator, n: int, base_dir: Path | None, field: str) -> np.ndarray:
        return np.full(n, self.value, dtype=np.int64)


class UniformLength(StrictModel):
    """Whole numbers from low to high, both included, equally likely."""

    dist: Literal["uniform"]
    low: Tokens
    high: Tokens

    @model_validator(mode="after")
    def _ordered(self) -> UniformLength:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        return self

    def draw(self, rng: np.random.Generator, n: int, base_dir: Path | None, field: str) -> np.ndarray:
        return rng.integers(self.low, self.high, size=n, endpoint=True, dtype=np.int64)


class NormalLength(StrictModel):
    """Normal, rounded, and raised to 1 where it falls below (which lifts the mean if std ~ mean)."""

    dist: Literal["normal"]
    mean: TokenMean
    std: TokenSpread

    def draw(self, rng: np.random.Generator, n: int, base_dir: Path | None, field: str) -> np.ndarray:
        return _tokens(self.mean + self.std * rng.standard_normal(n))


class LognormalLength(StrictModel):
    """Lognormal given by the mean and standard deviation of the token count itself (not its log).

    Internally sigma^2 = ln(1 + std^2 / mean^2) and mu = ln(mean) - sigma^2 / 2.
    """

    dist: Literal["lognormal"]
    mean: float = Field(ge=1, le=MAX_TOKENS)  # at least a token, so std / mean stays finite when squared
    std: float = Field(gt=0, le=MAX_TOKENS)

    def draw(self, rng: np.random.Generator, n: int, base_dir: Path | None, field: str) -> np.ndarray:
        sigma2 = np.log1p((self.std / self.mean) ** 2)
        mu = np.log(self.mean) - sigma2 / 2
        return _tokens(np.exp(mu + np.sqrt(sigma2) * rng.standard_normal(n)))


class EmpiricalLength(StrictModel):
    """Lengths resampled (with replacement) from one column of a CSV file.

    `column` may be a column name or `prompt` / `output` (num_prefill_tokens / num_decode_tokens,
    the columns of the shipped length files); left out, it is the one matching the field it sits in.
    When a class takes both lengths from the same file, whole rows are drawn, keeping the
    correlation between a request's prompt and output lengths.
    """

    dist: Literal["empirical"]
    path: str
    column: str | None = None

    def column_for(self, field: str) -> str:
        name = self.column or ("prompt" if field.endswith("prompt_tokens") else "output")
        return LENGTH_COLUMN_ALIASES.get(name, name)

    def values(self, base_dir: Path | None, field: str) -> np.ndarray:
        path = resolve_path(self.path, base_dir, f"{field}.path")
        return traces.read_length_column(path, self.column_for(field))

    def draw(self, rng: np.random.Generator, n: int, base_dir: Path | None, field: str) -> np.ndarray:
        values = self.values(base_dir, field)
        return values[rng.integers(0, values.size, size=n)]


LengthDist = Annotated[
    ConstantLength | UniformLength | NormalLength | LognormalLength | EmpiricalLength,
    Field(discriminator="dist"),
]


def _tokens(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 1, MAX_TOKENS).astype(np.int64)
