"""Turn pydantic validation errors into messages a scenario author can act on."""

from __future__ import annotations

import difflib
import typing

from pydantic import BaseModel, ValidationError


def _models_in(annotation) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Optional, unions, lists, dicts)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found = []
    for arg in typing.get_args(annotation):
        found += _models_in(arg)
    return found


def _allowed_keys(root: type[BaseModel], loc: tuple) -> list[str]:
    models = [root]
    for part in loc:
        nxt = []
        for m in models:
            field = m.model_fields.get(part) if isinstance(part, str) else None
            if field is not None:
                nxt += _models_in(field.annotation)
        if not nxt and not isinstance(part, str):  # list index or dict key: stay on the item type
            continue
        if nxt:
            models = nxt
    keys = set()
    for m in models:
        keys.update(m.model_fields)
    return sorted(keys)


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def format_validation_error(exc: ValidationError, root: type[BaseModel], source: str) -> str:
    lines = [f"{source}: invalid scenario"]
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        path = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            key = str(loc[-1])
            allowed = _allowed_keys(root, loc[:-1])
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            lines.append(f"  {path}: unknown key{hint}; allowed keys here: {', '.join(allowed)}")
        elif err["type"] == "missing":
            lines.append(f"  {path}: required field is missing")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            given = err.get("input")
            shown = "" if isinstance(given, dict | list) else f" (got {_shown(given)})"
            lines.append(f"  {path}: {msg}{shown}")
    return "\n".join(lines)
