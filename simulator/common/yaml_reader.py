"""YAML from users, read defensively: PyYAML's safe loader, plus rejections of what it lets through.

Rejected, each with one `ConfigError` naming the place: files over `MAX_YAML_BYTES`, bytes that
are not UTF-8 (with their offset), a key repeated in one mapping (with both lines), nesting deeper
than `MAX_YAML_DEPTH`, more than `MAX_YAML_NODES` values once aliases are expanded (a "billion
laughs" file is a few lines that expand to billions), and integers too long for Python to convert.
Safe loading already refuses tags that would build objects, so nothing in a file executes code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from simulator.common.encoding import decode_utf8
from simulator.common.errors import ConfigError
from simulator.common.limits import MAX_YAML_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES

_MERGE_TAG = "tag:yaml.org,2002:merge"
# No number in a scenario needs more digits; longer ones cannot even be printed in an error
# (Python refuses int <-> str conversions beyond sys.get_int_max_str_digits()).
_MAX_INT_DIGITS = 100


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that counts nesting while composing and refuses duplicate keys and huge integers."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise ConstructorError(
                    None, None, f"nested deeper than {MAX_YAML_DEPTH} levels (the most allowed)", mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self):
        node = super().compose_document()
        size = _expanded_size(node)
        if size > MAX_YAML_NODES:
            raise ConstructorError(
                None, None,
                f"expands to more than {MAX_YAML_NODES:,} values once its aliases (*name) are "
                "followed; write the values out or use fewer aliases",
                node.start_mark,
            )  # fmt: skip
        return node

    def construct_mapping(self, node, deep=False):
        if isinstance(node, MappingNode):
            seen: dict[Any, Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG or not isinstance(key_node, ScalarNode):
                    continue  # merged keys may be overridden; complex keys fail on hashing below
                key = self.construct_object(key_node)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:
                    continue
                if first is not key_node:
                    raise ConstructorError(
                        None, None,
                        f"duplicate key {key!r} (first given on line {first.start_mark.line + 1}); "
                        "a key may appear once in a mapping",
                        key_node.start_mark,
                    )  # fmt: skip
        return super().construct_mapping(node, deep=deep)

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as exc:  # e.g. the date 2023-02-30
            raise ConstructorError(
                None, None, f"cannot read {str(node.value)[:40]!r}: {exc}", node.start_mark
            ) from None

    def construct_yaml_int(self, node):
        digits = len(str(node.value))
        try:
            value = super().construct_yaml_int(node)
        except ValueError:  # Python refuses int(str) beyond sys.get_int_max_str_digits() digits
            value = None
        if value is None or abs(value) >= 10**_MAX_INT_DIGITS:  # hex and octal skip that limit
            raise ConstructorError(
                None,
                None,
                f"integer of {digits:,} digits is too long (at most {_MAX_INT_DIGITS})",
                node.start_mark,
            )
        return value


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)


def _expanded_size(root: Node) -> int:
    """Values in the document with every alias expanded, counted without expanding anything.

    Aliases make the node graph a DAG (never a cycle: an anchor is defined before its aliases),
    so a node's expanded size is 1 plus its children's, each node computed once.
    """
    sizes: dict[int, int] = {}
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if children_done or not children:
            total = 1 + sum(sizes[id(c)] for c in children)
            sizes[id(node)] = min(total, MAX_YAML_NODES + 1)  # saturate: only "too many" matters
            continue
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _where(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""


def _describe(exc: yaml.YAMLError) -> str:
    """One line for a YAML error: where, then PyYAML's problem (without its source excerpt)."""
    if isinstance(exc, yaml.reader.ReaderError):
        char = chr(exc.character) if isinstance(exc.character, int) else exc.character
        return f"character {char!r} at position {exc.position} is not allowed ({exc.reason})"
    problem = getattr(exc, "problem", None)
    context = getattr(exc, "context", None)
    if problem is None:
        return " ".join(str(exc).split())
    return _where(exc) + (f"{problem} ({context})" if context else problem)


def parse_yaml(text: str, source: str) -> Any:
    """The value a YAML document holds; `source` (a path, "--set x") opens every error."""
    try:
        loader = _BoundedLoader(text)  # its reader refuses control characters at once
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {_describe(exc)}") from None
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {_describe(exc)}") from None
    except (ValueError, OverflowError) as exc:  # the scanner's chr() on an escape such as "\UFFFFFFFF"
        mark = loader.get_mark()
        raise ConfigError(
            f"{source}: not valid YAML: line {mark.line + 1}, column {mark.column + 1}: {exc}"
        ) from None
    except RecursionError:  # a guard: the depth limit stops nesting long before the stack ends
        raise ConfigError(f"{source}: nested too deeply to read") from None
    finally:
        loader.dispose()


def read_yaml_file(path: str | Path, what: str) -> Any:
    """The value a user's YAML file holds, after the checks above; `what` names it in errors."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file not found: {path}")
    size = path.stat().st_size
    if size > MAX_YAML_BYTES:
        raise ConfigError(
            f"{path}: {size:,} bytes is too large for a {what} file (at most {MAX_YAML_BYTES:,})"
        )
    return parse_yaml(decode_utf8(path.read_bytes(), str(path)), str(path))
