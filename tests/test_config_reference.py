"""docs/config-reference.md is generated from the config dataclasses; this keeps it current."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from flm.cli.config_cmd import REGENERATE, reference_markdown
from flm.config.reference import field_reference, type_name


def test_config_reference_is_current(repo_root: Path) -> None:
    doc = repo_root / "docs" / "config-reference.md"
    expected = reference_markdown()
    assert doc.read_text(encoding="utf-8") == expected, (
        f"{doc} is out of date with the config dataclasses; regenerate it with `{REGENERATE}` and commit it")


@dataclasses.dataclass
class Inner:
    rate: float | None = None
    """How fast, per step."""


@dataclasses.dataclass
class Outer:
    """The outer section."""

    name: str = "x"
    inner: Inner = dataclasses.field(default_factory=Inner)
    items: list[Inner] = dataclasses.field(default_factory=list)


def test_reference_reads_docstrings_types_and_defaults() -> None:
    top, inner, item = field_reference(Outer)
    assert top.doc == "The outer section." and [f.key for f in top.fields] == ["name", "inner", "items"]
    assert top.fields[0].default == '"x"' and top.fields[1].type == "section"
    assert inner.key == "inner" and inner.fields[0].key == "inner.rate"
    assert (inner.fields[0].type, inner.fields[0].default, inner.fields[0].doc) == ("float | null", "null",
                                                                                     "How fast, per step.")
    assert item.key == "items[]" and item.fields[0].key == "items[].rate"
    assert type_name(dict[str, int]) == "dict[str, int]"
