"""Utilisation beyond busy time: batch occupancy, token-budget use and KV use, by hand."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import simulator
from simulator.metrics.utilisation import utilisation
from simulator.scenario import load_scenario


def test_utilisation_by_hand():
    # one replica: 8 running for 10 s, then 0 for 10 s; busy for the first 10 s; KV 50% then 0
    ts = pd.DataFrame({"time": [0.0, 10.0, 20.0], "replica": 0, "waiting": 0, "running": [8, 0, 0],
                       "kv_usage": [0.5, 0.0, 0.0], "busy": [1, 0, 0]})
    requests = pd.DataFrame({"first_token": [1.0, 2.0], "prompt_tokens": [1000, 3000],
                             "cached_prompt_tokens": [0, 1000], "output_tokens": [101, 1]})
    use = utilisation(ts, requests, steps=100, max_num_seqs=16, max_num_batched_tokens=2048)
    assert use.busy == pytest.approx(0.5)
    assert use.batch_occupancy == pytest.approx(4 / 16)  # 8 running half the time, of 16 seats
    assert use.token_budget_use == pytest.approx((1000 + 2000 + 100) / 100 / 2048)
    assert use.kv_mean == pytest.approx(0.25) and use.kv_peak == pytest.approx(0.5)


def test_a_busy_engine_can_have_a_nearly_empty_batch():
    results = simulator.run(load_scenario(Path(__file__).resolve().parent.parent / "scenarios/chatbot_a10g.yaml", ["workload.duration_s=300"]))
    use = results.info["utilisation"]
    assert use["busy"] > 0.7  # a step is almost always running ...
    assert use["batch_occupancy"] < 0.1 and use["token_budget_use"] < 0.05  # ... with a few sequences in it
