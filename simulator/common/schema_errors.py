"""Turn pydantic validation errors into messages a scenario author can act on."""

from __future__ import annotations

import difflib
import typing

import annotated_types
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo


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


def _field_at(root: type[BaseModel], loc: tuple):
    """The FieldInfo a location ends in (None past a list index, a dict key or an unknown name)."""
    models, found = [root], None
    for part in loc:
        if not isinstance(part, str):
            continue
        fields = [m.model_fields[part] for m in models if part in m.model_fields]
        if fields:
            found = fields[0]
            models = [n for f in fields for n in _models_in(f.annotation)] or models
        else:  # a discriminated union's tag (e.g. "lognormal") picks its member
            models = [m for m in models if _tagged(m, part)] or models
    return found


def _tagged(model: type[BaseModel], tag: str) -> bool:
    return any(
        typing.get_origin(f.annotation) is typing.Literal and typing.get_args(f.annotation) == (tag,)
        for f in model.model_fields.values()
    )


def _number(bound) -> str:
    if isinstance(bound, float) and bound.is_integer() and abs(bound) < 1e16:
        bound = int(bound)
    return f"{bound:,}" if isinstance(bound, int) else f"{bound:.6g}"


def _constraints(field) -> list:
    """Numeric bounds of a field, including those of Optional, list and dict value types."""
    found = list(field.metadata)
    stack = list(typing.get_args(field.annotation))
    while stack:
        arg = stack.pop()
        if isinstance(arg, FieldInfo):
            found += arg.metadata
        elif isinstance(arg, annotated_types.BaseMetadata):
            found.append(arg)
        elif not (isinstance(arg, type) and issubclass(arg, BaseModel)):
            stack += typing.get_args(arg)
    return found


def _allowed_range(root: type[BaseModel], loc: tuple) -> str:
    """'allowed: > 0 and <= 4096' for a bounded number, '' otherwise."""
    field = _field_at(root, loc)
    if field is None:
        return ""
    words = []
    for c in _constraints(field):
        for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            bound = getattr(c, attr, None)
            if isinstance(bound, int | float) and f"{sign} {_number(bound)}" not in words:
                words.append(f"{sign} {_number(bound)}")
    return f"; allowed: {' and '.join(words)}" if words else ""


# error types on numbers, after which the field's allowed range is worth repeating
_NUMBER_ERRORS = {"finite_number", "greater_than", "greater_than_equal", "less_than", "less_than_equal",
                  "int_parsing", "int_from_float", "int_type", "float_parsing", "float_type"}  # fmt: skip


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def format_validation_error(
    exc: ValidationError, root: type[BaseModel], source: str, *, what: str = "scenario", prefix: tuple = ()
) -> str:
    """`source: invalid what`, then one line per problem: the field's path (after `prefix`), what is
    wrong, the value given and, for numbers, the range allowed."""
    lines = [f"{source}: invalid {what}"]
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        path = ".".join(str(p) for p in (*prefix, *loc)) or "(top level)"
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
            allowed = _allowed_range(root, loc) if err["type"] in _NUMBER_ERRORS else ""
            lines.append(f"  {path}: {msg}{shown}{allowed}")
    return "\n".join(lines)
