"""One task instance (a JSON record) -> its propositions, each a statement with a truth label.

FreeLM's unified proposition format: whatever the task, an instance becomes statements the model judges
true or false. Multiple choice gives one statement per option (only the answer's is true), classification
one per label verbalisation (only the gold label's is true), a free statement itself with its label.
"""

from __future__ import annotations

from typing import Any

from flm.pipelines.propositions.mapping import TaskMapping

TRUE_WORDS = {"true", "yes", "1", "t", "y", "correct", "对", "是", "正确"}
FALSE_WORDS = {"false", "no", "0", "f", "n", "incorrect", "wrong", "错", "否", "错误"}


class Dropped(Exception):
    """An instance that cannot become propositions; `reason` is its accounting key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _field(record: dict[str, Any], name: str) -> Any:
    if name not in record or record[name] is None:
        raise Dropped("missing_field", f"no field {name!r}")
    return record[name]


def _fill(template: str, values: dict[str, Any]) -> str:
    try:
        text = template.format_map(values)
    except KeyError as err:
        raise Dropped("missing_field", f"template {template!r} needs field {err.args[0]!r}") from None
    except (ValueError, IndexError) as err:
        raise Dropped("bad_template", f"template {template!r}: {err}") from None
    text = " ".join(text.split()) if text.isascii() else text.strip()
    if not text:
        raise Dropped("empty", "the statement is empty")
    return text


def truth(value: Any) -> bool:
    """A truth label from JSON: a bool, 0/1, or a word such as true/false, yes/no, 对/错."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    raise Dropped("bad_label", f"label {value!r} is not a truth value (true/false, 1/0, yes/no)")


def _multiple_choice(task: TaskMapping, record: dict[str, Any]) -> list[tuple[str, bool]]:
    options = _field(record, task.options)
    if not isinstance(options, list) or len(options) < 2 or not all(isinstance(o, str) and o.strip()
                                                                      for o in options):
        raise Dropped("bad_options", f"field {task.options!r} must be a list of at least two non-empty strings")
    answer = _field(record, task.answer)
    if isinstance(answer, bool) or not isinstance(answer, int | str):
        raise Dropped("bad_answer", f"answer {answer!r} must be an option index or an option's text")
    if isinstance(answer, int):
        if not 0 <= answer < len(options):
            raise Dropped("bad_answer", f"answer index {answer} is outside the {len(options)} options")
        right = answer
    elif answer in options:
        right = options.index(answer)
    elif len(answer) == 1 and answer.upper() in "ABCDEFGHIJ"[: len(options)]:
        right = "ABCDEFGHIJ".index(answer.upper())  # a letter answer (A, B, C, ...)
    else:
        raise Dropped("bad_answer", f"answer {answer!r} is neither an option nor an index/letter")
    return [(_fill(task.template, {**record, "option": option}), i == right) for i, option in enumerate(options)]


def _classification(task: TaskMapping, record: dict[str, Any]) -> list[tuple[str, bool]]:
    gold = str(_field(record, task.label))
    if gold not in task.verbalizers:
        raise Dropped("bad_label", f"label {gold!r} is not one of {', '.join(task.verbalizers)}")
    return [(_fill(template, record), label == gold) for label, template in task.verbalizers.items()]


def _statement(task: TaskMapping, record: dict[str, Any]) -> list[tuple[str, bool]]:
    text = _field(record, task.text)
    if not isinstance(text, str):
        raise Dropped("bad_text", f"field {task.text!r} must be a string")
    return [(_fill("{_text}", {"_text": text}), truth(_field(record, task.label)))]


CONVERTERS = {"multiple_choice": _multiple_choice, "classification": _classification, "statement": _statement}


def propositions(task: TaskMapping, record: Any) -> list[tuple[str, bool]]:
    """The (statement, is_true) pairs of one record; Dropped(reason) when it cannot make them."""
    if not isinstance(record, dict):
        raise Dropped("malformed", f"a record must be a JSON object, got {type(record).__name__}")
    pairs = CONVERTERS[task.kind](task, record)
    texts = [text for text, _ in pairs]
    if len(set(texts)) != len(texts):
        raise Dropped("duplicate_statements", "two of its statements read the same")
    return pairs
