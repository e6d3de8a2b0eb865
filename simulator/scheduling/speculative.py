"""Speculative decoding settings, shared by the simulator and the engine.

A draft proposes `num_speculative_tokens` tokens for each decoding sequence; the target model
verifies them in one step of k+1 new tokens per sequence and keeps the longest accepted run plus
one token of its own, so a step emits 1..k+1 tokens per sequence. The draft is a smaller model
(named from the catalog or given inline) or `ngram` (prompt lookup, no model to run).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

NGRAM = "ngram"


class SpeculativeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    draft_model: str | dict[str, Any] = Field(
        ..., description="catalog name or inline spec of the draft model, or 'ngram' (prompt lookup)"
    )
    num_speculative_tokens: int = Field(..., gt=0, le=32, description="tokens the draft proposes per step")
    acceptance_rate: float | list[float] | None = Field(
        None,
        description="probability that each proposed token is accepted given all earlier ones were: one "
        "number for every position, or one per position (simulator only; the engine measures its own)",
    )

    @model_validator(mode="after")
    def _rates_in_range(self) -> SpeculativeConfig:
        rates = self.acceptance_rate
        if isinstance(rates, list) and len(rates) != self.num_speculative_tokens:
            raise ValueError(
                f"acceptance_rate lists {len(rates)} values but num_speculative_tokens is "
                f"{self.num_speculative_tokens}: give one per position, or a single number"
            )
        for rate in rates if isinstance(rates, list) else [rates]:
            if rate is not None and not 0.0 <= rate <= 1.0:
                raise ValueError(f"acceptance_rate {rate} must be between 0 and 1")
        return self

    @property
    def uses_draft_model(self) -> bool:
        return self.draft_model != NGRAM

    def acceptance_by_position(self) -> list[float]:
        """Acceptance probability of positions 1..k (conditional on the earlier ones)."""
        rates = self.acceptance_rate
        if rates is None:
            return []
        return list(rates) if isinstance(rates, list) else [float(rates)] * self.num_speculative_tokens

    def expected_tokens_per_step(self) -> float:
        """Mean tokens a verify step emits per sequence: 1 + sum over j of P(first j accepted)."""
        expected, survive = 1.0, 1.0
        for rate in self.acceptance_by_position():
            survive *= rate
            expected += survive
        return expected
