"""The scenario reference, generated from the pydantic schema: the JSON Schema editors validate
against (`llmsim schema > scenario.schema.json`) and docs/scenario_reference.md
(`llmsim schema --markdown`), which a test keeps in step with the code."""

from __future__ import annotations

import json
from typing import Any

from simulator.metrics.objectives import allowed_slo_keys
from simulator.scenario.schema import Scenario

HEADER = """# Scenario reference

Generated from the schema by `llmsim schema --markdown` (do not edit by hand; `tests/test_scripting.py`
fails when this file is stale). Editors can validate scenarios against the JSON Schema:
`.venv/bin/llmsim schema > scenario.schema.json` (VS Code: the YAML extension's `yaml.schemas`).
Every section rejects unknown keys; the error names the field, the value given and what is allowed.
"""

SLO_KEYS = """## SLO keys

Two places state SLOs:

- per request class, `workload.classes[].slo` (`ttft_ms`, `tpot_ms`, `e2e_ms`, `itl_ms`; see
  `SLO` below): a request is *good* when it meets every one of its class's limits; goodput and SLO
  attainment count good requests. A run meets the classes' SLOs when, for every class with SLOs,
  its `slo_target.percentile` latency of each metric it names is within the limit and its
  attainment is at least `slo_target.attainment_pct`.
- a plan's `plan.slo`, checked over all requests together: keys `pXX_METRIC_ms` with XX in 50, 90,
  95, 99 and METRIC in ttft, tpot, itl, e2e, plus `attainment_pct`. Each request is then held to
  the plan's limit for each metric (the highest percentile's, if several).

All `plan.slo` keys: {keys}.

`run.window` measures by simulated time; the decisive percentile (the highest one the SLOs use)
sizes its default window (simulator/scenario/window.py).
"""


def json_schema() -> dict[str, Any]:
    schema = Scenario.model_json_schema()
    schema["properties"].pop("base_dir", None)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "llmsim scenario"
    return schema


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


def _type(prop: dict, defs: dict) -> str:
    if "$ref" in prop:
        return f"[{prop['$ref'].split('/')[-1]}](#{prop['$ref'].split('/')[-1].lower()})"
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" for v in prop["enum"])
    if "const" in prop:
        return f"`{prop['const']}`"
    for key in ("anyOf", "oneOf"):
        if key in prop:
            return " or ".join(_type(p, defs) for p in prop[key])
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list of {_type(prop.get('items', {}), defs)}"
    if kind == "object" and "additionalProperties" in prop and isinstance(prop["additionalProperties"], dict):
        return f"mapping to {_type(prop['additionalProperties'], defs)}"
    bounds = [f"{sym} {prop[k]}" for k, sym in (("exclusiveMinimum", ">"), ("minimum", ">="),
                                                 ("exclusiveMaximum", "<"), ("maximum", "<=")) if k in prop]
    return kind + (f" ({', '.join(bounds)})" if bounds else "")


def _default(prop: dict) -> str:
    if "default" not in prop:
        return "required"
    value = prop["default"]
    return f"`{json.dumps(value)}`" if not isinstance(value, dict) or len(json.dumps(value)) < 60 else "(section)"


def _table(name: str, model: dict, defs: dict) -> list[str]:
    lines = [f"## {name}", ""]
    if model.get("description"):
        lines += [" ".join(model["description"].split()), ""]
    lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, prop in model.get("properties", {}).items():
        text = " ".join(prop.get("description", "").split()).replace("|", "\\|")
        lines.append(f"| `{key}` | {_type(prop, defs)} | {_default(prop)} | {text} |")
    return lines + [""]


def markdown_reference() -> str:
    schema = json_schema()
    defs = schema.get("$defs", {})
    parts = [HEADER, *_table("Scenario (top level)", schema, defs)]
    for name in sorted(defs):
        if defs[name].get("type") == "object" or "properties" in defs[name]:
            parts += _table(name, defs[name], defs)
        elif "enum" in defs[name]:
            parts += [f"## {name}", "", "one of " + ", ".join(f"`{v}`" for v in defs[name]["enum"]), ""]
    parts.append(SLO_KEYS.format(keys=", ".join(f"`{k}`" for k in allowed_slo_keys())))
    return "\n".join(parts).rstrip() + "\n"
