"""The workload: arrival processes (synthetic, diurnal, replayed traces), request classes with
their length distributions and SLOs, and the concrete requests drawn from them. Imports
simulator.common and simulator.metrics (a class's SLOs)."""

from simulator.workload.arrivals import ConstantArrival, GammaArrival, PoissonArrival, TraceArrival
from simulator.workload.config import RequestClass, WorkloadConfig, load_workload
from simulator.workload.diurnal import DiurnalArrival
from simulator.workload.generate import Request, Workload, clip_to_context, generate
from simulator.workload.paths import resolve_path

__all__ = [
    "ConstantArrival",
    "DiurnalArrival",
    "GammaArrival",
    "PoissonArrival",
    "Request",
    "RequestClass",
    "TraceArrival",
    "Workload",
    "WorkloadConfig",
    "clip_to_context",
    "generate",
    "load_workload",
    "resolve_path",
]
