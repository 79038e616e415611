"""The faithfulness check of a rephrasing, in English and Chinese: numbers in every spelling, names, terms, fields,
formats, tasks, topic; and its rates on the planted sets (tests/evaluation/data/rephrase_planted_*.jsonl)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from weitiao.evaluation.faithful import answer_values, numbers_in, problems, states, values_to_keep, zh_number, zh_words
from weitiao.evaluation.rephrase import RuleFormatter

DATA = Path(__file__).parent / "data"


def test_chinese_numerals_are_numbers():
    assert [zh_number(t) for t in ("五", "两", "十", "十二", "三十五", "一百零五", "两千", "二〇二四", "一点五")] == [
        5, 2, 10, 12, 35, 105, 2000, 2024, 1.5]
    assert numbers_in("张三今年三十五岁") == {"35"}  # 三 of 张三 is a name, not a number
    assert numbers_in("请列举五种水果。") == numbers_in("请列出5种水果。") == {"5"}
    assert numbers_in("用两句话概括") == {"2"} and numbers_in("一些水果，一起吃") == set()
    assert numbers_in("一个半小时") == {"1.5"} and numbers_in("in one and a half hours") == {"1.5"}
    assert numbers_in("one hundred degrees") == {"100"} and numbers_in("Answer in a single word") == {"1"}
    assert numbers_in("输出一个JSON对象") == set()  # 一个 is "a", as English writes it
    assert [zh_words(n) for n in (2, 5, 10, 12, 35, 105)] == ["两", "五", "十", "十二", "三十五", "一百零五"]
    assert RuleFormatter().format("请列出{n:zh}种{what}。", n="5", what="水果") == "请列出五种水果。"


def test_the_issues_chinese_pairs():
    assert problems("请列出5种水果。", "请列举五种水果。", []) == []
    assert problems("张三住在哪个城市？", "请问张三现在住在哪座城市？", []) == []
    assert problems("张三今年35岁，他住在哪里？", "张三今年三十五岁，他住在哪里？", []) == []
    assert problems("请列出5种水果。", "请列出5种蔬菜。", []) == ["drops the topic: 水果"]
    assert any(p.startswith("loses a name: 张三") for p in problems("张三住在哪个城市？", "他住在哪个城市？", []))
    assert "changes the format: json -> none" in problems("从下面的段落中提取姓名、年龄、城市和职业，以JSON格式输出。",
                                                          "从下面的段落中提取姓名、年龄、城市和职业。", [])


def test_the_issues_english_rephrasings():
    """The six rephrasings `rephrase.model=base` wrote for the held-back extraction task: the four that drop
    fields, rename a key or say something else are rejected. Of the two that ask the same thing, one passes; the
    other is rejected for its "rephrased", a word of another task (precision first: it costs coverage only)."""
    q = "Extract the person's name, age, city and job as JSON."
    assert problems(q, "Extract the person's name and age, city, and job as JSON.", []) == []
    assert problems(q, "The request was rephrased to JSON with fields name, age, city, and job.", []) == [
        "changes the task: none -> rewrite"]
    for bad in ('Extract the "person:name:age:city,job:name:city:city,country:job" from the JSON request.',
                "This description is in JSON format, so you can simply copy and paste the JSON into a new field in "
                "an API and convert to JSON before sending it to a server.",
                "Dressup the person described for the requested JSON object.",
                'Produce a JSON object with keys "name", "age", "city", "getJob" for the person described using '
                'Python.'):
        assert problems(q, bad, []), bad
    assert "adds a term: getjob" in problems(q, 'Produce a JSON object with keys "name", "age", "city", "getJob".',
                                             [])
    assert "drops a field: job" in problems(q, "Extract the person's name, age and city as JSON.", [])


def test_chinese_answer_values_must_stay():
    answer = '{"姓名": "张三", "年龄": 35, "城市": "北京"}'
    turn = "提取姓名、年龄和城市，以JSON格式输出。\n\n张三今年三十五岁，住在北京。"
    assert answer_values(answer) == ["张三", "35", "北京"] and states(turn, "35")
    assert values_to_keep(turn, [answer]) == ["张三", "35", "北京"]
    assert "loses an answer value: '北京'" in problems(turn, "提取姓名、年龄和城市，以JSON格式输出。张三今年三十五岁。",
                                                       [], keep=["张三", "35", "北京"])


@pytest.mark.parametrize("language", ["en", "zh"])
def test_planted_sets_precision_first(language):
    """Rates on the planted sets, published in docs/guides/rephrasing.md (bench/rephrase_checks.py). The dev
    sets were used to build the rules; the held-out sets were written apart and read only to measure, so their
    acceptance of faithful rewordings is lower: rejecting a faithful rewording costs coverage, accepting an
    unfaithful one makes the gap false, so the bar on rejection is the high one on both."""
    rates = {}
    for split in ("dev", "heldout", "heldout2"):
        path = DATA / f"rephrase_planted_{language}_{split}.jsonl"
        rows = [json.loads(line) for line in path.open(encoding="utf-8")]
        faithful = [r for r in rows if r["faithful"]]
        unfaithful = [r for r in rows if not r["faithful"]]
        assert len(faithful) >= 26 and len(unfaithful) >= 26

        def accepted(r):
            keep = values_to_keep(r["question"], [r["answer"]]) if r.get("answer") else []
            return not problems(r["question"], r["candidate"], [], keep=keep)

        rates[split] = (sum(map(accepted, faithful)) / len(faithful),
                        sum(not accepted(r) for r in unfaithful) / len(unfaithful))
    assert rates["dev"][0] >= 0.9 and rates["dev"][1] >= 0.95, rates
    assert rates["heldout"][1] >= 0.95, rates  # precision holds on text the rules never saw
    assert rates["heldout"][0] >= 0.6, rates  # recall there is what the docs say it is, no better
    assert rates["heldout2"][1] >= 0.9 and rates["heldout2"][0] >= 0.7, rates  # the second, later held-out set


def test_what_the_second_held_out_set_showed():
    """Bugs the second held-out sets found (bench/rephrase_checks.py, docs/guides/rephrasing.md), each on a pair
    of its own: a full-width comma is no thousands separator, a Chinese decimal jieba cuts in two is one number,
    a unit is no number, "unable" negates as "cannot" does, a number list keeps its items with "and", and a
    numeral glued to a Chinese word is checked as a number, not as the topic."""
    assert numbers_in("把56，13，98排序") == {"56", "13", "98"} and numbers_in("Price: 1,000 dollars") == {"1000"}
    assert numbers_in("三点五公斤是多少斤？") == {"3.5"} and numbers_in("3.5千克等于多少斤？") == {"3.5"}
    assert not problems("3.5公斤等于多少斤？", "三点五公斤是多少斤？", [])
    assert not problems("Name three birds that cannot fly.", "Name 3 birds that are unable to fly.", [])
    assert problems("Name three birds that can fly.", "Name 3 birds that are unable to fly.", [])
    assert not problems("Sort 42, 7, 19, 88, 3 in descending order.", "Sort 42, 7, 19, 88 and 3 in descending order.",
                        [])
    assert not problems("用Markdown表格列出一周七天的中文和英文名称。", "用Markdown表格列出一周7天的中文和英文名称。", [])
    assert problems("用表格列出一周七天的名称。", "用表格列出一周五天的名称。", [])  # the number still counts


def test_markup_and_stutter_are_not_rewordings():
    """Two rewordings the base model wrote for the extraction demo kept every field but are not questions a user
    asks; a question itself written in markup may still be reworded in markup."""
    q = "Extract the person's name, age, city and job as JSON."
    assert problems(q, "/person/name/age/city/job => /JSON", []) == ["garbled: mostly markup"]
    assert "garbled: a word said twice in a row" in problems(q, "Extract the the name, age, city and job as JSON.",
                                                              [])
    assert problems(q, "From the text, give name, age, city and job in JSON and nothing else.", []) == []
    assert problems("Return {name, age} as JSON.", "Give {name, age} back as JSON.", []) == []
