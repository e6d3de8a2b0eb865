"""Log-probabilities of sampled tokens, read from the logits of the step that sampled them.

A forward hook on the model keeps a reference to the logits [num_seqs, vocab] of its last
forward pass (one row per sequence of the step, in step order), so the engine thread can report
the chosen token's log-probability and the most likely alternatives without changing how steps
run. The values are those of the model's own distribution (a log-softmax of the raw logits),
before temperature and top-p, as vLLM reports them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TokenLogprob:
    token: int
    logprob: float
    top: list[tuple[int, float]]  # the most likely tokens, most likely first


class LogitsTap:
    def __init__(self, model: torch.nn.Module):
        self.logits: torch.Tensor | None = None
        self.wanted = False  # keep the logits only while some request asks for logprobs
        model.register_forward_hook(self._keep)

    def _keep(self, module, args, output) -> None:
        self.logits = output if self.wanted else None

    def read(self, row: int, token: int, top: int) -> TokenLogprob:
        """Row `row` of the last step sampled `token`; `top` alternatives with it."""
        logprobs = torch.log_softmax(self.logits[row].float(), dim=-1)
        chosen = float(logprobs[token])
        best: list[tuple[int, float]] = []
        if top:
            values, ids = logprobs.topk(min(top, logprobs.shape[-1]))
            best = list(zip(ids.tolist(), values.tolist()))
        return TokenLogprob(token, chosen, best)

    def clear(self) -> None:
        self.logits = None
