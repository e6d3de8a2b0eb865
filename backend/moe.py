"""A mixture-of-experts feed-forward layer: top-k softmax routing, experts run as grouped matmuls.

The router (one logit per expert) gives softmax probabilities in fp32; each token keeps its
`num_experts_per_token` most probable experts, their probabilities rescaled to sum to one when
the variant says so (Mixtral, Qwen3-MoE; Qwen2-MoE keeps them as they are). The experts'
weights are stacked, `w_gate_up` [experts, 2 x width, hidden] (gate rows first) and `w_down`
[experts, hidden, width], so one expert is one contiguous slice.

The (token, expert) assignments are sorted by expert and each expert that received any runs its
rows as one matmul per projection: a step reads the weights of the experts its tokens touch,
once each, which is what makes its cost depend on how many distinct experts that is (recorded
in `experts_touched` for the profiler). On CPU in fp32 an expert's rows past 32 are padded to a
few bucket sizes (`layers.padded_rows`) so that oneDNN reuses compiled kernels instead of
compiling one per new row count in every step. Outputs go back to assignment order and each
token sums its k weighted outputs in a fixed order, so results do not depend on the device's
atomics.
A shared expert (Qwen2-MoE, DeepSeek) runs on every token, scaled by sigmoid(shared gate) when
the model has one.
"""

from __future__ import annotations

import torch
from torch import nn

from backend.layers import MLP, Linear, linear, padded_rows, silu_and_mul
from backend.variant import Variant
from simulator.spec import ModelSpec

__all__ = ["SparseMoE", "route"]


def route(logits: torch.Tensor, top_k: int, normalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Routing weights (fp32) and expert ids, each [tokens, top_k], from router logits [tokens, experts]."""
    probs = torch.softmax(logits.float(), dim=-1)
    weights, experts = torch.topk(probs, top_k, dim=-1)
    if normalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, experts


class SparseMoE(nn.Module):
    def __init__(self, spec: ModelSpec, variant: Variant, dtype: torch.dtype):
        super().__init__()
        hidden, width = spec.hidden_size, spec.moe_intermediate_size
        self.num_experts, self.top_k = spec.num_experts, spec.num_experts_per_token
        self.normalize = variant.normalize_top_k
        self.router = Linear(hidden, self.num_experts, bias=False, dtype=dtype)
        self.w_gate_up = nn.Parameter(torch.empty(self.num_experts, 2 * width, hidden, dtype=dtype))
        self.w_down = nn.Parameter(torch.empty(self.num_experts, hidden, width, dtype=dtype))
        shared = spec.shared_expert_intermediate_size
        self.shared_expert = MLP(hidden, shared, dtype) if shared else None
        self.shared_expert_gate = (
            Linear(hidden, 1, bias=False, dtype=dtype) if shared and variant.shared_expert_gate else None
        )
        self.experts_touched = 0  # distinct experts the last step's tokens were routed to

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.shape[0]
        weights, experts = route(self.router(x), self.top_k, self.normalize)
        flat = experts.reshape(-1)
        order = torch.argsort(flat, stable=True)  # assignments grouped by expert
        counts = torch.bincount(flat, minlength=self.num_experts).tolist()
        rows = x[order // self.top_k]
        grouped = torch.empty_like(rows)
        start = 0
        for expert, count in enumerate(counts):
            if count:
                part = rows[start : start + count]
                padded = padded_rows(count, part)
                if padded > count:  # rows are independent: the padding's outputs are dropped
                    part = torch.cat([part, part.new_zeros(padded - count, part.shape[1])])
                hidden = silu_and_mul(linear(part, self.w_gate_up[expert]))
                grouped[start : start + count] = linear(hidden, self.w_down[expert])[:count]
                start += count
        self.experts_touched = sum(1 for count in counts if count)
        outputs = torch.empty_like(grouped)
        outputs[order] = grouped
        weighted = outputs.view(tokens, self.top_k, -1) * weights.to(x.dtype).unsqueeze(-1)
        out = weighted.sum(dim=1)
        if self.shared_expert is not None:
            shared = self.shared_expert(x)
            if self.shared_expert_gate is not None:
                shared = shared * torch.sigmoid(self.shared_expert_gate(x))
            out = out + shared
        return out
