"""The YAML that says how each task's JSONL records become propositions (statements that are true or false).

    valid_fraction: 0.2          # share of instances held out (by a hash of task and line): OUT/valid
    max_tokens: 128              # a longer proposition drops its instance (reason too_long)
    tasks:
      - name: capitals           # multiple choice: one proposition per option, true for the answer
        kind: multiple_choice
        file: capitals.jsonl     # relative to this YAML
        lang: en
        template: "{question} {option}"
        question: question       # field names (these are the defaults)
        options: options         # a list of strings
        answer: answer           # an index into options, or the right option's text
      - name: nli                # classification: one proposition per label verbalisation
        kind: classification
        file: nli.jsonl
        label: label
        verbalizers:
          entailment: "{premise} So {hypothesis}"
          contradiction: "{premise} So it is false that {hypothesis}"
      - name: facts              # free statements with a truth label
        kind: statement
        file: facts.jsonl
        text: text
        label: label             # true/false, 1/0, "true"/"false"

Templates are Python format strings over the record's fields ({option} is the option in multiple choice).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

KINDS = ("multiple_choice", "classification", "statement")


@dataclass
class TaskMapping:
    name: str
    kind: str
    """multiple_choice | classification | statement."""
    file: Path
    """A JSONL file (one record per line); relative paths resolve against the mapping YAML's folder."""
    lang: str = ""
    """Language tag kept with each proposition (en, zh, ...); eval reports it."""
    template: str = "{question} {option}"
    """multiple_choice: how the question and one option read as a statement."""
    question: str = "question"
    options: str = "options"
    answer: str = "answer"
    label: str = "label"
    verbalizers: dict[str, str] = field(default_factory=dict)
    """classification: label value -> template of the statement that the label is right."""
    text: str = "text"
    """statement: the field holding the statement."""

    def validate(self) -> None:
        if not self.name or ":" in self.name:
            raise ValueError(f"task name {self.name!r} must be non-empty and hold no ':'")
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name!r}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.kind == "classification" and len(self.verbalizers) < 2:
            raise ValueError(f"task {self.name!r}: a classification task needs verbalizers for at least two labels")
        if self.kind == "multiple_choice" and "{option}" not in self.template:
            raise ValueError(f"task {self.name!r}: template {self.template!r} must contain {{option}}")


@dataclass
class PropositionMapping:
    tasks: list[TaskMapping] = field(default_factory=list)
    valid_fraction: float = 0.0
    """Share of instances (all propositions of one instance together) written to OUT/valid instead of OUT/train."""
    max_tokens: int = 128
    """Longest proposition, judge token included; an instance with a longer one is dropped (too_long)."""

    def validate(self) -> None:
        if not self.tasks:
            raise ValueError("tasks: at least one task is needed")
        names = [t.name for t in self.tasks]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"task names must be unique; repeated: {', '.join(repeated)}")
        if not 0.0 <= self.valid_fraction < 1.0:
            raise ValueError(f"valid_fraction must be in [0, 1), got {self.valid_fraction}")
        if self.max_tokens < 2:
            raise ValueError(f"max_tokens must be at least 2, got {self.max_tokens}")
