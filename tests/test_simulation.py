"""The SimPy model end to end: determinism, conservation, Little's law and queueing theory."""

import json

import numpy as np
import pytest

from simulator.execution import RooflineModel
from simulator.scenario import build_deployment, parse_scenario, run
from simulator.serving import serve
from simulator.workload import generate


def scenario(**over):
    data = {
        "name": "t",
        "model": "llama-3-8b",
        "hardware": "a100-80gb",
        "deployment": {"replicas": 1},
        "scheduler": {"policy": "vllm", "max_num_seqs": 64},
        "workload": {
            "arrival": {"process": "poisson", "rate": 4.0},
            "num_requests": 400,
            "classes": [
                {
                    "name": "chat",
                    "prompt_tokens": {"dist": "lognormal", "mean": 500, "std": 300},
                    "output_tokens": {"dist": "lognormal", "mean": 150, "std": 100},
                    "slo": {"ttft_ms": 500, "tpot_ms": 50},
                }
            ],
        },
    }
    for key, value in over.items():
        node = data
        *parents, last = key.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return parse_scenario(data)


def test_same_seed_gives_identical_summary_and_other_seed_differs():
    a = run(scenario(), seed=3).summary.to_dict()
    b = run(scenario(), seed=3).summary.to_dict()
    c = run(scenario(), seed=4).summary.to_dict()
    assert a == b
    assert a["latency_s"]["ttft"] != c["latency_s"]["ttft"]


@pytest.mark.parametrize("policy", ["vllm", "static"])
def test_every_request_finishes_or_is_reported(policy):
    res = run(scenario(scheduler__policy=policy, workload__arrival={"process": "poisson", "rate": 50.0}))
    counts = res.summary.to_dict()["counts"]
    assert counts["completed"] + counts["rejected"] + counts["unfinished"] + counts["errors"] == counts["total"]
    assert counts["total"] == 400
    done = res.requests[res.requests.status == "ok"]
    # every completed request produced exactly the output tokens it asked for
    wl = generate(scenario().workload, seed=0, max_context=8192).to_frame().set_index("request_id")
    assert (done.set_index("id").output_tokens == wl.output_tokens.loc[done.id]).all()


def test_merged_decode_steps_give_the_same_results_as_single_steps():
    merged = run(scenario(workload__arrival={"process": "poisson", "rate": 8.0}))
    single = run(scenario(workload__arrival={"process": "poisson", "rate": 8.0}, run={"merge_decode_steps": False}))
    a, b = merged.requests, single.requests
    for col in ("ttft", "e2e", "tpot", "itl_max"):
        np.testing.assert_allclose(a[col].to_numpy(), b[col].to_numpy(), rtol=1e-9, atol=1e-9)
    assert merged.info["steps"] == single.info["steps"]


def test_littles_law_holds_between_timeseries_and_request_times():
    res = run(scenario(deployment={"replicas": 2}, workload__num_requests=3000, router="least_outstanding_requests"))
    ts, df = res.timeseries, res.requests
    end = df.finish.max()
    # time-average of requests in the system, from the replicas' own samples (state holds until next)
    total = 0.0
    for _, g in ts.groupby("replica"):
        t = np.append(g.time.to_numpy(), end)
        n = (g.waiting + g.running).to_numpy()
        total += float(np.sum(n * np.diff(t)))
    mean_in_system = total / end
    throughput = len(df) / end
    assert mean_in_system == pytest.approx(throughput * df.e2e.mean(), rel=0.05)


def test_single_server_matches_md1_mean_wait():
    """Batch size 1 + Poisson arrivals + identical requests = an M/D/1 queue (Pollaczek-Khinchine)."""
    rho = 0.7
    sc = scenario(
        scheduler={"policy": "vllm", "max_num_seqs": 1},
        workload={
            "arrival": {"process": "poisson", "rate": 1.0},  # replaced below once S is known
            "num_requests": 40000,
            "classes": [{"name": "c", "prompt_tokens": {"dist": "constant", "value": 200},
                         "output_tokens": {"dist": "constant", "value": 20}}],
        },
    )
    dep = build_deployment(sc)
    ex: RooflineModel = dep.entry.execution
    prefill = ex.step_time(np.array([200]), np.array([0]))
    service = prefill + float(np.sum(ex.decode_run_times(np.array([200]), 19)))
    rate = rho / service
    sc = sc.model_copy(update={"workload": sc.workload.model_copy(
        update={"arrival": sc.workload.arrival.model_copy(update={"rate": rate})})})
    wl = generate(sc.workload, seed=11, max_context=8192)
    seqs = serve(dep, wl, sc.seed).seqs
    waits = np.array([s.token_times[0] - s.arrival for s in seqs]) - prefill
    expected = rho * service / (2 * (1 - rho))  # Wq = lambda S^2 / (2 (1 - rho))
    assert waits.mean() == pytest.approx(expected, rel=0.05)
    e2e = np.array([s.finish_time - s.arrival for s in seqs])
    assert e2e.min() == pytest.approx(service, rel=1e-9)


def test_overload_is_flagged_as_saturated():
    res = run(scenario(workload__arrival={"process": "poisson", "rate": 200.0}, workload__num_requests=3000))
    assert res.summary.saturated
    light = run(scenario(workload__arrival={"process": "poisson", "rate": 2.0}))
    assert not light.summary.saturated


def test_more_replicas_cut_latency_under_load():
    one = run(scenario(workload__arrival={"process": "poisson", "rate": 12.0}, workload__num_requests=1500))
    two = run(scenario(deployment={"replicas": 2}, workload__arrival={"process": "poisson", "rate": 12.0},
                       workload__num_requests=1500))
    assert two.summary.latency["ttft"].p90 < one.summary.latency["ttft"].p90
    assert two.summary.cost_per_hour == pytest.approx(2 * one.summary.cost_per_hour)


def test_results_folder_has_every_output(tmp_path):
    res = run(scenario(workload__num_requests=50))
    out = res.save(tmp_path / "r")
    for name in ("summary.json", "requests.csv", "timeseries.csv", "plots/ttft_cdf.png", "plots/queue_kv.png"):
        assert (out / name).stat().st_size > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    assert "wall_time_s" in json.loads((out / "run_log.json").read_text())


def test_identical_runs_write_identical_summaries(tmp_path):
    """summary.json holds what the run determines; the wall time goes to run_log.json."""
    first = run(scenario(workload__num_requests=50)).save(tmp_path / "a")
    second = run(scenario(workload__num_requests=50)).save(tmp_path / "b")
    assert (first / "summary.json").read_bytes() == (second / "summary.json").read_bytes()
    assert "wall_time" not in (first / "summary.json").read_text()


def md1_scenario(rho: float, n: int, seed: int = 0):
    """One request at a time, identical requests: an M/D/1 queue at load `rho`."""
    classes = [{"name": "c", "prompt_tokens": {"dist": "constant", "value": 200},
                "output_tokens": {"dist": "constant", "value": 20}}]
    sc = scenario(seed=seed, scheduler={"policy": "vllm", "max_num_seqs": 1},
                  workload={"arrival": {"process": "poisson", "rate": 1.0}, "num_requests": n, "classes": classes})
    ex = build_deployment(sc).entry.execution
    service = ex.step_time(np.array([200]), np.array([0])) + float(np.sum(ex.decode_run_times(np.array([200]), 19)))
    arrival = sc.workload.arrival.model_copy(update={"rate": rho / service})
    return sc.model_copy(update={"workload": sc.workload.model_copy(update={"arrival": arrival})})


@pytest.mark.parametrize("seed", [0, 1])
def test_a_slight_overload_is_flagged_by_the_time_in_system(seed):
    """3% more arrivals than service: the queue grows by 90 over a half of 3,000 arrivals, below the
    queue rule's 5% limit, but every later request waits longer: the time-in-system rule flags it."""
    res = run(md1_scenario(1.03, 6000, seed))
    assert res.summary.saturated and "time to first token rose" in res.summary.saturation_reason
    assert not run(md1_scenario(0.95, 6000, seed)).summary.saturated  # loaded, but stable


def test_a_drained_burst_is_flagged():
    """60 requests in 3 s to a static batcher that needs half a minute for them: the latencies are
    those of draining a backlog, not of a load the GPU carries."""
    classes = [{"name": "c", "prompt_tokens": {"dist": "constant", "value": 500},
                "output_tokens": {"dist": "constant", "value": 400}}]
    res = run(scenario(scheduler={"policy": "static", "max_num_seqs": 8},
                       workload={"arrival": {"process": "poisson", "rate": 20.0}, "num_requests": 60,
                                 "classes": classes}))
    assert res.summary.saturated
