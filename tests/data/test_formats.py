from __future__ import annotations

import re

import pytest

from weitiao.data.formats import RowProblem, to_example
from weitiao.data.readers import Row


def convert(fmt, data, columns=None, system=None):
    return to_example(Row(data, "f line 1"), fmt, columns or {}, system).messages


def test_alpaca_with_input_system_history():
    got = convert("alpaca", {"instruction": "Translate", "input": "hello", "output": "你好", "system": "S",
                             "history": [["q1", "a1"]]})
    assert got == (("system", "S"), ("user", "q1"), ("assistant", "a1"), ("user", "Translate\n\nhello"),
                   ("assistant", "你好"))


def test_sharegpt_messages_chatglm_and_text():
    assert convert("sharegpt", {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}],
                                "system": "S"}) == (("system", "S"), ("user", "hi"), ("assistant", "yo"))
    assert convert("messages", {"messages": [{"role": "user", "content": " hi "},
                                             {"role": "assistant", "content": "yo"}]}) == (
        ("user", "hi"), ("assistant", "yo"))
    assert convert("chatglm", {"prompt": "p", "response": "r", "history": [["a", "b"]]}) == (
        ("user", "a"), ("assistant", "b"), ("user", "p"), ("assistant", "r"))
    ex = to_example(Row({"text": "plain words"}, "w"), "text", {}, None)
    assert ex.text == "plain words" and ex.messages == ()


def test_column_mapping_and_default_system():
    got = convert("alpaca", {"question": "q", "answer": "a"}, {"instruction": "question", "output": "answer"},
                  system="Be brief.")
    assert got == (("system", "Be brief."), ("user", "q"), ("assistant", "a"))


@pytest.mark.parametrize("fmt,data,message", [
    ("alpaca", {"instruction": "x"}, "missing field 'output'"),
    ("alpaca", {"instruction": "x", "output": "  "}, "field 'output' is empty"),
    ("alpaca", {"instruction": "x", "output": "y"}, "missing field 'q' (the 'instruction' field)"),
    ("messages", {"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]},
     "unknown role 'bot'"),
    ("messages", {"messages": [{"role": "assistant", "content": "a"}]}, "turn 1 is 'assistant'"),
    ("messages", {"messages": [{"role": "user", "content": "a"}]}, "does not end with an assistant turn"),
    ("messages", {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}]},
     "turn 2 (assistant) is empty"),
    ("sharegpt", {"conversations": "hi"}, "must be a non-empty list"),
    ("chatglm", {"prompt": "p", "response": "r", "history": [["only one"]]}, "history[0] must be"),
    # a number or a list where text is expected is a wrong type, not silently made text
    ("alpaca", {"instruction": 42, "output": "y"},
     'field \'instruction\' must be text, got int (write it in quotes: "42")'),
    ("alpaca", {"instruction": "x", "output": ["a", "b"]}, "field 'output' must be text, got list"),
    ("chatglm", {"prompt": "p", "response": 1.5}, "field 'response' must be text, got float"),
])
def test_bad_rows_name_the_problem(fmt, data, message):
    columns = {"instruction": "q"} if "'q'" in message else {}
    with pytest.raises(RowProblem, match=re.escape(message)):
        to_example(Row(data, "f line 1"), fmt, columns, None)


def test_preference_rows_in_every_accepted_shape():
    def pair(fmt, data):
        ex = to_example(Row(data, "f line 1"), fmt, {}, None)
        return ex.messages, ex.rejected

    plain = pair("preference", {"prompt": "List 2 fruits.", "chosen": "1. Apple\n2. Pear", "rejected": "Apple"})
    assert plain == ((("user", "List 2 fruits."), ("assistant", "1. Apple\n2. Pear")), "Apple")
    # TRL's conversational form: the prompt as turns, each answer one assistant turn; a system field is added
    trl = pair("preference", {"prompt": [{"role": "user", "content": "List 2 fruits."}],
                              "chosen": [{"role": "assistant", "content": "1. Apple\n2. Pear"}],
                              "rejected": [{"role": "assistant", "content": "Apple"}], "system": "S"})
    assert trl == ((("system", "S"),) + plain[0], "Apple")
    # LLaMA-Factory's sharegpt ranking rows, with history before the last question
    lf = pair("sharegpt_preference", {
        "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"},
                          {"from": "human", "value": "List 2 fruits."}],
        "chosen": {"from": "gpt", "value": "1. Apple\n2. Pear"}, "rejected": {"from": "gpt", "value": "Apple"}})
    assert lf == ((("user", "hi"), ("assistant", "hello")) + plain[0], "Apple")


@pytest.mark.parametrize("data,message", [
    ({"prompt": "p", "chosen": "a"}, "missing field 'rejected'"),
    ({"prompt": "p", "chosen": "a", "rejected": "a"}, "chosen and rejected are the same text"),
    ({"prompt": [{"role": "user", "content": "p"}, {"role": "assistant", "content": "x"}], "chosen": "a",
      "rejected": "b"}, "the prompt must end with a user turn"),
    ({"prompt": "p", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"},
     "field 'chosen' must be an assistant turn"),
    ({"prompt": "p", "chosen": ["a", "b"], "rejected": "b"}, "must hold exactly one assistant turn"),
])
def test_bad_preference_rows_name_the_problem(data, message):
    with pytest.raises(RowProblem, match=re.escape(message)):
        to_example(Row(data, "f line 1"), "preference", {}, None)


def test_a_class_label_may_be_a_number():
    example = to_example(Row({"text": "hello", "label": 1}, "f line 1"), "labelled", {}, None)
    assert example.label == "1"
    with pytest.raises(RowProblem, match="field 'text' must be text, got int"):
        to_example(Row({"text": 7, "label": "a"}, "f line 1"), "labelled", {}, None)
