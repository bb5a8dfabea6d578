"""A field reference generated from the config dataclasses themselves: every dotted key, its type, its default
and the docstring written under it (`field: int = 3` followed by a string literal).

The dataclasses are the one source of truth for what a key means; `flm config fields` prints this and
docs/config-reference.md is this rendered as Markdown (a test keeps the two in sync).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import textwrap
import types
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal, Union

from flm.config.loader import config_to_dict


@dataclass(frozen=True)
class FieldDoc:
    key: str
    """Dotted key as `--set` takes it; `[]` marks an item of a list, `<name>` a key of a mapping."""
    type: str
    default: str
    """The default as YAML would spell it; empty for a section (a nested config) or a required key."""
    doc: str


@dataclass(frozen=True)
class SectionDoc:
    key: str
    """Dotted key of the nested config ('' for the top level)."""
    doc: str
    fields: tuple[FieldDoc, ...]


@cache
def attribute_docs(cls: type) -> dict[str, str]:
    """The docstrings written under a class's annotated attributes (and its bases'), by attribute name."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object:
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = next((n for n in ast.parse(source).body if isinstance(n, ast.ClassDef)), None)
        if body is None:
            continue
        for stmt, nxt in zip(body.body, body.body[1:], strict=False):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[stmt.target.id] = " ".join(inspect.cleandoc(nxt.value.value).split())
    return docs


def class_doc(cls: type) -> str:
    """A dataclass's own docstring, on one line (dataclass's generated signature docstring is not one)."""
    doc = cls.__dict__.get("__doc__") or ""
    if doc.startswith(f"{cls.__name__}("):
        return ""
    return " ".join(inspect.cleandoc(doc).split())


def type_name(tp: Any) -> str:
    """A type as a reader of YAML thinks of it: `int | null`, `"cosine" | "linear"`, `list[str]`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "null"
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is Literal:
        return " | ".join(f'"{a}"' if isinstance(a, str) else repr(a) for a in args)
    if origin in (list, tuple, dict):
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{origin.__name__}[{inner}]" if inner else origin.__name__
    if dataclasses.is_dataclass(tp):
        return "section"
    return getattr(tp, "__name__", str(tp)).replace("Path", "path")


def _default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "(required)"
    if dataclasses.is_dataclass(value):
        return ""
    value = config_to_dict(value)
    return json.dumps(value, ensure_ascii=False)


def _nested(tp: Any, key: str) -> list[tuple[str, type]]:
    """Dataclasses reachable from a field's type, with the dotted key they sit under."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return [(key, typing.cast(type, tp))]
    if origin in (Union, types.UnionType):
        return [n for a in args for n in _nested(a, key)]
    if origin in (list, tuple) and args:
        return _nested(args[0], f"{key}[]")
    if origin is dict and len(args) == 2:
        return _nested(args[1], f"{key}.<name>")
    return []


def field_reference(cls: type, prefix: str = "") -> list[SectionDoc]:
    """Every section of config class `cls` (itself first, then nested configs depth first), with its fields."""
    hints = typing.get_type_hints(cls)
    docs = attribute_docs(cls)
    fields, children = [], []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        key = f"{prefix}.{f.name}" if prefix else f.name
        nested = _nested(hints[f.name], key)
        doc = docs.get(f.name) or (class_doc(nested[0][1]) if nested else "")  # a section: its class's docstring
        fields.append(FieldDoc(key, type_name(hints[f.name]), _default(f), doc))
        children.extend(nested)
    sections = [SectionDoc(prefix, class_doc(cls), tuple(fields))]
    for key, child in children:
        sections.extend(field_reference(child, key))
    return sections


def select(sections: list[SectionDoc], section: str) -> list[SectionDoc]:
    """The sections at or under dotted key `section` (e.g. `optim`, `model.mup`)."""
    return [s for s in sections if s.key == section or s.key.startswith(f"{section}.")
            or s.key.startswith(f"{section}[")]


def to_markdown(title: str, sections: list[SectionDoc]) -> str:
    """Sections as Markdown tables (one per section), for docs/config-reference.md."""
    lines = [f"## {title}", ""]
    for section in sections:
        if section.key:
            lines += [f"### `{section.key}`", ""]
        if section.doc:
            lines += [section.doc, ""]
        lines += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        for f in section.fields:
            cells = [f"`{f.key}`", f.type, f"`{f.default}`" if f.default else "", f.doc]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)
