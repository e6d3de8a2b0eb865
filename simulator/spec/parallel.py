"""How one replica spreads over GPUs: tensor, attention data, expert and pipeline parallelism.

    GPUs per replica = tp x dp x pp
    a pipeline stage = tp x dp ranks; attention runs tensor-parallel over tp ranks, replicated on
                       dp groups that each serve their own sequences (data-parallel attention);
                       dense MLPs follow attention
    MoE layers       = the stage's tp x dp ranks as moe_tp x ep: experts spread over ep ranks,
                       each expert's width split over moe_tp = tp x dp / ep ranks

`ep = 1` is tensor-parallel MoE (vLLM's default: every rank holds a 1/tp slice of every expert);
`ep = tp x dp` is vLLM's `--enable-expert-parallel` (whole experts per rank). With `dp = 1` every
rank sees the same tokens and the MoE output is all-reduced; with `dp > 1` each rank's tokens are
dispatched to the ranks holding their experts and combined back (all-to-all), as DeepSeek
deployments run it (attention DP, MoE EP).
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.common.errors import ConfigError
from simulator.spec.model import ModelSpec


@dataclass(frozen=True)
class Parallelism:
    tp: int = 1
    dp: int = 1  # data-parallel attention groups
    ep: int = 1  # expert-parallel degree of the MoE layers
    pp: int = 1  # pipeline stages

    @property
    def gpus(self) -> int:
        return self.tp * self.dp * self.pp

    @property
    def stage_ranks(self) -> int:
        return self.tp * self.dp

    @property
    def moe_tp(self) -> int:
        return self.stage_ranks // self.ep

    @property
    def is_plain(self) -> bool:
        """Tensor parallelism only."""
        return self.dp == 1 and self.ep == 1 and self.pp == 1

    def describe(self) -> str:
        parts = [f"tp={self.tp}"]
        parts += [f"{name}={value}" for name, value in (("dp", self.dp), ("ep", self.ep), ("pp", self.pp)) if value > 1]
        return " ".join(parts)

    def as_dict(self) -> dict:
        return {"tensor_parallel": self.tp, "data_parallel_attention": self.dp, "expert_parallel": self.ep,
                "pipeline_parallel": self.pp, "gpus": self.gpus}  # fmt: skip

    def validate(self, model: ModelSpec) -> None:
        """Raise ConfigError naming the field, its value and what is allowed."""
        for name, value in (("tensor_parallel", self.tp), ("data_parallel_attention", self.dp),
                            ("expert_parallel", self.ep), ("pipeline_parallel", self.pp)):  # fmt: skip
            if value < 1:
                raise ConfigError(f"deployment.{name}: got {value}; allowed: a positive integer")
        if model.num_heads % self.tp:
            raise ConfigError(
                f"deployment.tensor_parallel: tp={self.tp} must be a positive divisor of {model.name}'s "
                f"num_heads ({model.num_heads})"
            )
        if not model.uses_mla and model.num_kv_heads % self.tp and self.tp % model.num_kv_heads:
            raise ConfigError(
                f"deployment.tensor_parallel: tp={self.tp} must divide {model.name}'s num_kv_heads "
                f"({model.num_kv_heads}) or be a multiple of it"
            )
        if not model.is_moe and (self.dp > 1 or self.ep > 1):
            raise ConfigError(
                f"deployment.data_parallel_attention={self.dp}, expert_parallel={self.ep}: {model.name} has no "
                "mixture of experts; allowed: 1 (for a dense model, add replicas instead)"
            )
        if self.ep > 1:
            if self.stage_ranks % self.ep:
                raise ConfigError(
                    f"deployment.expert_parallel: ep={self.ep} must divide tensor_parallel x data_parallel_attention "
                    f"= {self.stage_ranks} (the ranks of one stage); allowed: "
                    f"{', '.join(str(d) for d in range(1, self.stage_ranks + 1) if self.stage_ranks % d == 0)}"
                )
            if model.num_experts % self.ep:
                raise ConfigError(
                    f"deployment.expert_parallel: ep={self.ep} must divide {model.name}'s num_experts "
                    f"({model.num_experts})"
                )
        if model.is_moe and model.moe_intermediate_size % self.moe_tp:
            raise ConfigError(
                f"deployment: the MoE layers split each expert over tp x dp / ep = {self.moe_tp} ranks, which must "
                f"divide {model.name}'s moe_intermediate_size ({model.moe_intermediate_size}); raise expert_parallel"
            )
        if self.pp > model.num_layers:
            raise ConfigError(
                f"deployment.pipeline_parallel: pp={self.pp} exceeds {model.name}'s {model.num_layers} layers"
            )

    def check_node(self, gpus_per_node: int, hardware: str) -> None:
        """A stage's ranks exchange activations every layer, so they must share one node."""
        if self.stage_ranks > gpus_per_node:
            raise ConfigError(
                f"deployment: tensor_parallel x data_parallel_attention = {self.stage_ranks} ranks per pipeline "
                f"stage, more than the {gpus_per_node} GPUs of one {hardware} node; allowed: at most "
                f"{gpus_per_node} (span nodes with pipeline_parallel)"
            )


def as_parallelism(tp: int | Parallelism) -> Parallelism:
    return tp if isinstance(tp, Parallelism) else Parallelism(tp=tp)
