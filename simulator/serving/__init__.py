"""The SimPy model of serving: replicas stepping the shared schedulers, routers, pools (a colocated
deployment is one pool; disaggregated serving a prefill and a decode pool joined by a KV link),
the autoscaler and speculative-decoding timing. It receives a plain `Deployment` and a workload,
never a scenario. Imports simulator.execution, simulator.workload, simulator.scheduling,
simulator.metrics, simulator.spec and simulator.common."""

from simulator.serving.autoscaling import AutoscalingConfig
from simulator.serving.deployment import Deployment, KVLink, Pool
from simulator.serving.outcome import results
from simulator.serving.routing import ROUTERS, make_router
from simulator.serving.simulate import Served, serve

__all__ = ["ROUTERS", "AutoscalingConfig", "Deployment", "KVLink", "Pool", "Served", "make_router", "results",
           "serve"]
