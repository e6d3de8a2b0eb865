"""Details of a model family that change a model's values but not its cost, which ModelSpec omits.

A ModelSpec holds what a step costs (layers, widths, experts); checkpoints of different families
with the same numbers still compute different functions. The loader reads these flags from
config.json; a model built from a spec with seeded random weights takes the defaults below.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.spec import ModelSpec


@dataclass(frozen=True)
class Variant:
    qk_norm: bool = False  # Qwen3: RMSNorm over each head of q and k before the rotary embedding
    normalize_top_k: bool = True  # rescale the kept router probabilities to sum to one (Mixtral, Qwen3-MoE)
    shared_expert_gate: bool = False  # Qwen2-MoE: the shared expert's output times sigmoid(x . w)

    @classmethod
    def for_spec(cls, spec: ModelSpec) -> Variant:
        """Random-weight models: Mixtral's routing, or Qwen2-MoE's when there is a shared expert
        (the one supported family that has one)."""
        if spec.is_moe and spec.shared_expert_intermediate_size:
            return cls(normalize_top_k=False, shared_expert_gate=True)
        return cls()
