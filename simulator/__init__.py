"""llmsim's simulator: scenarios in, predicted latency, throughput and cost out.

    import simulator
    results = simulator.run(simulator.load_scenario("scenarios/chatbot_a10g.yaml"))
    results.summary, results.requests, results.timeseries, results.plot("plots/")

Subpackages, each importing only those below it (checked by import-linter in `make test`):
common < spec, scheduling, metrics < workload, execution < serving < scenario < studies < cli.
"""

_EXPORTS = {
    "run": "simulator.scenario.runner",
    "load_scenario": "simulator.scenario.loading",
    "parse_scenario": "simulator.scenario.loading",
    "Results": "simulator.metrics.results",
}


def __getattr__(name):  # imported lazily: `import simulator` stays cheap for the CLI and workers
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'simulator' has no attribute {name!r}")


__all__ = list(_EXPORTS)
