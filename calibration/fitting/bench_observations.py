"""What a client's measurements of a server say about its steps: request intervals as weighted
sums of step shapes, for `llmsim calibrate --from-bench`.

A server seen from outside gives, per request, its arrival, first token, finish and lengths; no
step is timed on its own. Two kinds of interval are sums of steps whose make-up can be told:

- the TTFT of a request that arrived to an idle server: its prefill (plus time outside the
  engine's steps, HTTP and tokenisation, fitted as a separate offset that the simulator does not
  add). vLLM V1 (`policy="vllm"`) splits a prompt longer than the token budget into chunks, one
  step each, the k-th chunk reading the k-1 before it from the cache; a prefill-first scheduler
  (`vllm-v0`) runs the whole prompt in one step;
- the decode span of a request (first token to last): its `output - 1` steps, each with the
  requests decoding at the time (their number averaged over the span, each one's context grown
  linearly from prompt to prompt + output). The prompts of the requests whose first token fell
  inside the span were computed meanwhile: V1 puts their chunks into the same steps, after the
  decodes, under one token budget (simulator/scheduling/vllm_v1.py composes steps so), so some of
  the span's steps are mixed (decodes + a prefill chunk of at most budget - decodes tokens); a
  prefill-first scheduler runs each such prompt as an extra prefill-only step in between.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

from simulator.common.errors import ConfigError
from simulator.execution.fitted import StepFeatures

POLICIES = ("vllm", "vllm-v0")
_SPAN_SAMPLES = 48  # points per decode span at which the batch is averaged


@dataclass
class BenchObservations:
    """Measured intervals as weighted sums of steps: duration[i] ~ sum_k counts[i, k] x step_k."""

    durations: np.ndarray
    kinds: np.ndarray  # "ttft" or "decode"
    counts: sparse.csr_array  # [observations, steps]
    new: np.ndarray  # [steps, rows], rows with 0 new tokens are padding
    cached: np.ndarray
    info: dict = field(default_factory=dict)

    @property
    def features(self) -> StepFeatures:
        return StepFeatures.of(self.new, self.cached)


def read_bench(dirs: list[str | Path]) -> list[pd.DataFrame]:
    """The completed requests of each results folder (requests.csv), one frame per run."""
    frames = []
    for d in dirs:
        path = Path(d) / "requests.csv"
        if not path.is_file():
            raise ConfigError(
                f"--from-bench {d}: no requests.csv there (is it an `llmsim bench` output folder?)"
            )
        frame = pd.read_csv(path)
        needed = {"status", "arrival", "first_token", "finish", "prompt_tokens", "output_tokens"}
        missing = sorted(needed - set(frame.columns))
        if missing:
            raise ConfigError(f"--from-bench {path}: missing column(s) {', '.join(missing)}")
        frames.append(frame[frame["status"] == "ok"].reset_index(drop=True))
    return frames


class _Steps:
    """Unique step shapes and how often each observation contains them."""

    def __init__(self):
        self.index: dict[tuple, int] = {}
        self.rows: list[tuple[tuple[int, int], ...]] = []
        self.entries: list[tuple[int, int, float]] = []  # (observation, step, count)

    def add(self, obs: int, rows: tuple[tuple[int, int], ...], count: float) -> None:
        if count <= 0:
            return
        k = self.index.setdefault(rows, len(self.rows))
        if k == len(self.rows):
            self.rows.append(rows)
        self.entries.append((obs, k, count))

    def arrays(self, num_obs: int):
        width = max(len(r) for r in self.rows)
        new = np.zeros((len(self.rows), width))
        cached = np.zeros((len(self.rows), width))
        for k, rows in enumerate(self.rows):
            new[k, : len(rows)] = [n for n, _ in rows]
            cached[k, : len(rows)] = [c for _, c in rows]
        obs, k, count = (np.array(column) for column in zip(*self.entries))
        counts = sparse.csr_array((count, (obs, k)), shape=(num_obs, len(self.rows)))  # duplicates add up
        return counts, new, cached


def prompt_chunks(prompt: int, room: int) -> list[tuple[int, int]]:
    """(new tokens, cached tokens) of each chunk of a prompt computed `room` tokens per step."""
    room = max(int(room), 1)
    return [(min(room, prompt - start), start) for start in range(0, prompt, room)]


def _check(policy: str, budget: int) -> None:
    if policy not in POLICIES:
        raise ConfigError(f"--policy: got {policy!r}; allowed: {', '.join(POLICIES)} (the server's scheduler)")
    if budget < 1:
        raise ConfigError(f"--max-num-batched-tokens: must be >= 1, got {budget}")


def observations(frames: list[pd.DataFrame], policy: str = "vllm", budget: int = 2048) -> BenchObservations:
    """Idle-arrival TTFTs and decode spans of every run, as sums of steps of `policy` with a token
    budget of `budget` per step (V1's max_num_batched_tokens)."""
    _check(policy, budget)
    v1 = policy == "vllm"
    steps = _Steps()
    durations, kinds = [], []
    batches, contexts = [], []
    mixed_steps = 0
    for frame in frames:
        a = frame["arrival"].to_numpy(float)
        f = frame["first_token"].to_numpy(float)
        e = frame["finish"].to_numpy(float)
        p = frame["prompt_tokens"].to_numpy(int)
        n = frame["output_tokens"].to_numpy(int)
        if len(frame) == 0:
            continue
        # TTFT of requests that found the server idle: no other request in flight from arrival
        # to first token.
        overlap = (a[None, :] < f[:, None]) & (e[None, :] > a[:, None])
        np.fill_diagonal(overlap, False)
        for i in np.flatnonzero(~overlap.any(axis=1)):
            for chunk in prompt_chunks(int(p[i]), budget if v1 else int(p[i])):
                steps.add(len(durations), (chunk,), 1.0)
            durations.append(f[i] - a[i])
            kinds.append("ttft")
        # Decode spans.
        decoding = n >= 2
        for i in np.flatnonzero(decoding & (e > f)):
            t = f[i] + (np.arange(_SPAN_SAMPLES) + 0.5) / _SPAN_SAMPLES * (e[i] - f[i])
            active = (f[None, :] <= t[:, None]) & (e[None, :] > t[:, None]) & decoding[None, :]
            progress = np.clip((t[:, None] - f[None, :]) / np.maximum(e - f, 1e-12)[None, :], 0, 1)
            context = p[None, :] + 1 + (n[None, :] - 1) * progress
            size = active.sum(axis=1)
            batch = float(size.mean())
            per_row = float((context * active).sum() / max(size.sum(), 1))
            cached = max(round(per_row) - 1, 0)
            decode = (1, cached)
            obs = len(durations)
            total = float(n[i] - 1)
            joined = np.flatnonzero((f > f[i]) & (f < e[i]))
            if v1:  # the prompts' chunks ride in the span's own steps, after the decodes
                rows = max(round(batch), 1)
                chunks = [c for j in joined for c in prompt_chunks(int(p[j]), budget - rows)]
                chunks = chunks[: int(total)]
                for chunk in chunks:
                    steps.add(obs, (decode,) * rows + (chunk,), 1.0)
                mixed_steps += len(chunks)
                total -= len(chunks)
            else:  # each prompt is a prefill-only step between the span's decode steps
                for j in joined:
                    steps.add(obs, ((int(p[j]), 0),), 1.0)
            low = max(int(np.floor(batch)), 1)
            frac = batch - low if batch > low else 0.0
            steps.add(obs, (decode,) * low, total * (1 - frac))
            steps.add(obs, (decode,) * (low + 1), total * frac)
            durations.append(e[i] - f[i])
            kinds.append("decode")
            batches.append(batch)
            contexts.append(per_row)
    if not durations:
        raise ConfigError("--from-bench: the runs hold no completed request to fit")
    counts, new, cached = steps.arrays(len(durations))
    kinds_arr = np.array(kinds)
    in_ttft = np.asarray(counts[kinds_arr == "ttft"].sum(axis=0)).ravel() > 0
    ttft_prompts = new[in_ttft].sum(axis=1) + cached[in_ttft].sum(axis=1)
    info = {
        "runs": len(frames),
        "policy": policy,
        "max_num_batched_tokens": budget if v1 else None,
        "ttft_observations": int((kinds_arr == "ttft").sum()),
        "decode_observations": int((kinds_arr == "decode").sum()),
        "mixed_steps": mixed_steps,
        "idle_prompt_tokens": [int(ttft_prompts.min()), int(ttft_prompts.max())] if ttft_prompts.size else None,
        "decode_batch": [round(min(batches), 2), round(max(batches), 2)] if batches else None,
        "decode_context": [round(min(contexts)), round(max(contexts))] if contexts else None,
    }
    return BenchObservations(np.asarray(durations), kinds_arr, counts, new, cached, info)
