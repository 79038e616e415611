"""Dataset formats, each turned into one canonical form: a list of {"role", "content"} messages.

Roles are `system`, `user` and `assistant`. A conversation is valid when it has an optional leading system
message, then alternates user/assistant, and ends with an assistant turn (that turn is what the model learns and
what evaluation compares against). The `text` format has no roles: its rows become a single "text" example.

Preference rows (`preference`, `sharegpt_preference`) become the conversation that ends with the preferred
("chosen") answer, plus the rejected answer to the same prompt: SFT-style evaluation scores the chosen answer as
the reference, and DPO and reward models train on the pair.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from weitiao.data.readers import Row

Message = dict  # {"role": str, "content": str}


@dataclass(frozen=True)
class Example:
    messages: tuple  # tuple of (role, content) pairs; empty for text rows
    text: str | None  # set for the `text` and `labelled` formats only
    where: str
    label: str | None = None  # the class name of a `labelled` row
    rejected: str | None = None  # a preference row's rejected answer; `messages` ends with the chosen one

    def as_messages(self) -> list[Message]:
        return [{"role": r, "content": c} for r, c in self.messages]


class RowProblem(Exception):
    """A problem with one row; the caller adds the row's location. `kind` classifies it for reports."""

    def __init__(self, message: str, kind: str = "invalid"):
        super().__init__(message)
        self.kind = kind


# Canonical field names of each format; `data.columns` maps them to the user's column names.
FIELDS = {
    "alpaca": ("instruction", "input", "output", "system", "history"),
    "sharegpt": ("conversations", "system"),
    "messages": ("messages",),
    "chatglm": ("prompt", "response", "history"),
    "text": ("text",),
    "labelled": ("text", "label"),
    "preference": ("prompt", "chosen", "rejected", "system"),
    "sharegpt_preference": ("conversations", "chosen", "rejected", "system"),
}

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "bot": "assistant", "model": "assistant"}


def _text(row: dict, name: str, col: str, required: bool, numbers: bool = False) -> str:
    """A text field of a row, stripped. `numbers`: a number is taken as its text (a class label such as 1); any
    other text field that holds a number, list or mapping is a wrong-type problem, not silently converted."""
    value = row.get(col)
    if value is None or (isinstance(value, float) and value != value):  # missing, or NaN from csv/parquet
        if required:
            raise RowProblem(f"missing field {col!r}" + (f" (the {name!r} field)" if col != name else ""),
                             "missing-field")
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float) if numbers else str):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        hint = f" (write it in quotes: \"{value}\")" if number else ""
        raise RowProblem(f"field {col!r} must be text, got {type(value).__name__}{hint}", "wrong-type")
    value = str(value).strip()
    if required and not value:
        raise RowProblem(f"field {col!r} is empty", "empty-field")
    return value


def _history(row: dict, col: str) -> list[tuple[str, str]]:
    hist = row.get(col)
    if hist is None or (isinstance(hist, float) and hist != hist):
        return []
    if not isinstance(hist, list):
        raise RowProblem(f"field {col!r} must be a list of [question, answer] pairs", "wrong-type")
    out = []
    for i, pair in enumerate(hist):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise RowProblem(f"{col}[{i}] must be a [question, answer] pair of strings", "wrong-type")
        q, a = pair[0].strip(), pair[1].strip()
        if not q or not a:
            raise RowProblem(f"{col}[{i}] has an empty question or answer", "empty-turn")
        out += [("user", q), ("assistant", a)]
    return out


def _alpaca(row: dict, col: Callable[[str], str]) -> list[tuple[str, str]]:
    instruction = _text(row, "instruction", col("instruction"), True)
    extra = _text(row, "input", col("input"), False)
    output = _text(row, "output", col("output"), True)
    system = _text(row, "system", col("system"), False)
    turns = [("system", system)] if system else []
    turns += _history(row, col("history"))
    turns += [("user", f"{instruction}\n\n{extra}" if extra else instruction), ("assistant", output)]
    return turns


def _chatglm(row: dict, col: Callable[[str], str]) -> list[tuple[str, str]]:
    prompt = _text(row, "prompt", col("prompt"), True)
    response = _text(row, "response", col("response"), True)
    return _history(row, col("history")) + [("user", prompt), ("assistant", response)]


def _turn_list(row: dict, col: str, role_key: str, content_key: str, roles: dict | None) -> list[tuple[str, str]]:
    turns = row.get(col)
    if turns is None:
        raise RowProblem(f"missing field {col!r}", "missing-field")
    if not isinstance(turns, list) or not turns:
        raise RowProblem(f"field {col!r} must be a non-empty list of turns", "wrong-type")
    out = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise RowProblem(f"{col}[{i}] must be an object with {role_key!r} and {content_key!r}", "wrong-type")
        role = turn.get(role_key)
        if role is None:
            raise RowProblem(f"{col}[{i}] has no {role_key!r}", "missing-field")
        mapped = (roles or {"system": "system", "user": "user", "assistant": "assistant"}).get(role)
        if mapped is None:
            raise RowProblem(f"{col}[{i}] has unknown role {role!r}", "unknown-role")
        content = turn.get(content_key)
        if not isinstance(content, str):
            raise RowProblem(f"{col}[{i}] has no text {content_key!r}", "wrong-type")
        out.append((mapped, content.strip()))
    return out


def _sharegpt(row: dict, col: Callable[[str], str]) -> list[tuple[str, str]]:
    turns = _turn_list(row, col("conversations"), "from", "value", SHAREGPT_ROLES)
    system = _text(row, "system", col("system"), False)
    return ([("system", system)] if system else []) + turns


def _messages(row: dict, col: Callable[[str], str]) -> list[tuple[str, str]]:
    return _turn_list(row, col("messages"), "role", "content", None)


def _answer(row: dict, name: str, col: str, roles: dict | None) -> str:
    """One answer of a preference pair: a string, a {from/role, value/content} turn, or a list holding one
    assistant turn (TRL's conversational form)."""
    value = row.get(col)
    if isinstance(value, list):
        if len(value) != 1:
            raise RowProblem(f"field {col!r} must hold exactly one assistant turn, got {len(value)}", "wrong-type")
        value = value[0]
    if isinstance(value, dict):
        role_key, content_key = ("from", "value") if "from" in value or "value" in value else ("role", "content")
        role = (roles or {"assistant": "assistant"}).get(value.get(role_key), None)
        if role != "assistant":
            raise RowProblem(f"field {col!r} must be an assistant turn, got role {value.get(role_key)!r}",
                             "unknown-role")
        value = value.get(content_key)
        if not isinstance(value, str):
            raise RowProblem(f"field {col!r} has no text {content_key!r}", "wrong-type")
        return _text({col: value}, name, col, True)
    return _text(row, name, col, True)


def _prompt_turns(row: dict, col: str, roles: dict | None, role_key: str, content_key: str) -> list[tuple[str, str]]:
    """The prompt of a preference row: a string (one user turn) or a list of turns ending with the user."""
    value = row.get(col)
    if isinstance(value, list):
        return _turn_list(row, col, role_key, content_key, roles)
    return [("user", _text(row, "prompt", col, True))]


def _preference(row: dict, col: Callable[[str], str]) -> tuple[list[tuple[str, str]], str]:
    turns = _prompt_turns(row, col("prompt"), None, "role", "content")
    rejected = _pair(row, col, None, turns)
    return _with_system(row, col, turns), rejected


def _sharegpt_preference(row: dict, col: Callable[[str], str]) -> tuple[list[tuple[str, str]], str]:
    turns = _turn_list(row, col("conversations"), "from", "value", SHAREGPT_ROLES)
    rejected = _pair(row, col, SHAREGPT_ROLES, turns)
    return _with_system(row, col, turns), rejected


def _with_system(row: dict, col: Callable[[str], str], turns: list[tuple[str, str]]) -> list[tuple[str, str]]:
    system = _text(row, "system", col("system"), False)
    return ([("system", system)] if system and not (turns and turns[0][0] == "system") else []) + turns


def _pair(row: dict, col: Callable[[str], str], roles: dict | None, turns: list) -> str:
    """Appends the chosen answer to `turns` and returns the rejected one; the two must differ."""
    if turns and turns[-1][0] != "user":
        raise RowProblem("the prompt must end with a user turn (the answers follow it)", "turn-order")
    chosen = _answer(row, "chosen", col("chosen"), roles)
    rejected = _answer(row, "rejected", col("rejected"), roles)
    if chosen == rejected:
        raise RowProblem("chosen and rejected are the same text: the pair prefers nothing", "invalid")
    turns.append(("assistant", chosen))
    return rejected


PREFERENCE_CONVERTERS = {"preference": _preference, "sharegpt_preference": _sharegpt_preference}
PREFERENCE_FORMATS = tuple(PREFERENCE_CONVERTERS)

CONVERTERS = {"alpaca": _alpaca, "chatglm": _chatglm, "sharegpt": _sharegpt, "messages": _messages}


def check_turns(turns: list[tuple[str, str]]) -> None:
    """Enforce [system] (user assistant)+ with no empty user or assistant turn."""
    body = turns[1:] if turns and turns[0][0] == "system" else turns
    if not body:
        raise RowProblem("conversation has no user/assistant turns", "empty-field")
    for i, (role, content) in enumerate(body):
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            raise RowProblem(f"turn {i + 1} is {role!r} where {expected!r} was expected "
                             "(turns must alternate user/assistant after an optional system message)", "turn-order")
        if not content:
            raise RowProblem(f"turn {i + 1} ({role}) is empty", "empty-turn")
    if body[-1][0] != "assistant":
        raise RowProblem("conversation does not end with an assistant turn", "turn-order")


def is_empty_row(row: dict) -> bool:
    """A row with no values at all (a blank CSV record, `{}`); a row with some structure is checked instead."""
    return all(v is None or (isinstance(v, str) and not v.strip()) for v in row.values())


def to_example(row: Row, fmt: str, columns: dict[str, str], system: str | None) -> Example:
    """Convert one row; raises RowProblem naming the field."""
    col = lambda name: columns.get(name, name)  # noqa: E731
    if fmt == "text":
        return Example((), _text(row.data, "text", col("text"), True), row.where)
    if fmt == "labelled":
        return Example((), _text(row.data, "text", col("text"), True), row.where,
                       label=_text(row.data, "label", col("label"), True, numbers=True))
    rejected = None
    if fmt in PREFERENCE_CONVERTERS:
        turns, rejected = PREFERENCE_CONVERTERS[fmt](row.data, col)
    else:
        turns = CONVERTERS[fmt](row.data, col)
    if system and not (turns and turns[0][0] == "system"):
        turns = [("system", system)] + turns
    check_turns(turns)
    return Example(tuple(turns), None, row.where, rejected=rejected)
