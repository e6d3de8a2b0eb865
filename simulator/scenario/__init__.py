"""The scenario: the YAML schema (validated with pydantic, nothing in it executes code), reading it
with overrides, and the one place it becomes plain objects (`build_deployment`) and a run.
Imports simulator.serving and every layer below it."""

from simulator.scenario.build import build_deployment, execution_model
from simulator.scenario.loading import apply_overrides, load_scenario, parse_scenario, read_scenario_data
from simulator.scenario.runner import run
from simulator.scenario.schema import Scenario

__all__ = ["Scenario", "apply_overrides", "build_deployment", "execution_model", "load_scenario", "parse_scenario",
           "read_scenario_data", "run"]
