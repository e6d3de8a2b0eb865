"""llmsim's simulator: scenarios in, predicted latency, throughput and cost out.

    import simulator
    results = simulator.run(simulator.load_scenario("scenarios/chatbot_a10g.yaml"))
    results.summary, results.requests, results.timeseries, results.plot("plots/")
"""

_EXPORTS = {
    "run": "simulator.simulation",
    "load_scenario": "simulator.scenario",
    "parse_scenario": "simulator.scenario",
    "Results": "simulator.results",
}


def __getattr__(name):  # imported lazily: `import simulator` stays cheap for the CLI and workers
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'simulator' has no attribute {name!r}")


__all__ = list(_EXPORTS)
