"""Generation metrics: each scores one prediction against its reference and returns a number in [0, 1].

The score of a split is the mean over rows. New metrics register in `METRICS` by name; the config names them in
`eval.metrics`. A user's own metric is named `module:function` (a function (prediction, reference) -> float,
importable from the working directory or the Python path).

ROUGE and BLEU follow ChatGLM's P-Tuning and LLaMA-Factory's scoring (`scripts/eval_bleu_rouge.py`), so numbers
are comparable with theirs: ROUGE-1/2/L is the F-score of `rouge_chinese` over words segmented by jieba (which also
splits English on spaces and punctuation); BLEU-4 is NLTK's sentence BLEU over characters, with smoothing method 3
(Chen & Cherry 2014). chrF is sacrebleu's (Popovic 2015), on characters too. Scores are fractions in [0, 1] (those
recipes print them x 100).
"""
from __future__ import annotations

import re
import unicodedata
from typing import Callable

# "3. Red panda": a number, a dot, one space, then the item; or a Chinese list style, with or without a space:
# "3、熊猫", "3.熊猫", "3．熊猫", "（3）熊猫", "(3) 熊猫", "三、熊猫", "③熊猫"
LIST_LINE = re.compile(r"^(?:(\d+)\. (?=\S)|(\d+)(?:[、．]|\.(?=[\u4e00-\u9fff]))\s*|[（(](\d+)[)）]\s*"
                       r"|([一二三四五六七八九十]+)、\s*|([\u2460-\u2473])\s*)(\S.*)$")


def list_number(m: re.Match) -> int:
    """The number of a LIST_LINE match, in whichever style it was written."""
    digits = m.group(1) or m.group(2) or m.group(3)
    if digits:
        return int(digits)
    if m.group(4):
        from weitiao.evaluation.numerals import zh_number

        return int(zh_number(m.group(4)))
    return ord(m.group(5)) - 0x2460 + 1


def normalize(text: str) -> str:
    """NFKC, trimmed, inner whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize(prediction) == normalize(reference))


def loose_normalize(text: str) -> str:
    """`normalize`, then lower case and without punctuation (ASCII and CJK: any Unicode category P*)."""
    text = "".join(ch for ch in normalize(text).lower() if not unicodedata.category(ch).startswith("P"))
    return " ".join(text.split())


def exact_match_loose(prediction: str, reference: str) -> float:
    """Exact match ignoring case, punctuation and spacing ("Paris." == "paris")."""
    return float(loose_normalize(prediction) == loose_normalize(reference))


def _words(text: str) -> list[str]:
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)  # jieba logs its dictionary loading on first use
    return [w for w in jieba.cut(text) if w.strip()]


def _rouge(prediction: str, reference: str) -> dict:
    hyp, ref = " ".join(_words(prediction)), " ".join(_words(reference))
    if not hyp.split() or not ref.split():  # rouge_chinese raises on empty text; an empty side shares nothing
        return {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}
    from rouge_chinese import Rouge

    scores = Rouge().get_scores(hyp, ref)[0]
    return {k: scores[k]["f"] for k in ("rouge-1", "rouge-2", "rouge-l")}


def rouge_1(prediction: str, reference: str) -> float:
    return _rouge(prediction, reference)["rouge-1"]


def rouge_2(prediction: str, reference: str) -> float:
    return _rouge(prediction, reference)["rouge-2"]


def rouge_l(prediction: str, reference: str) -> float:
    return _rouge(prediction, reference)["rouge-l"]


def bleu_4(prediction: str, reference: str) -> float:
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    # characters, not words: what LLaMA-Factory and ChatGLM compute (an empty prediction scores 0)
    if not prediction:
        return 0.0
    return float(sentence_bleu([list(reference)], list(prediction), smoothing_function=SmoothingFunction().method3))


def chrf(prediction: str, reference: str) -> float:
    from sacrebleu.metrics import CHRF

    return CHRF().sentence_score(prediction, [reference]).score / 100.0


def _json(text: str):
    """The JSON value in `text` (a ```json fence around it is allowed); raises ValueError when there is none."""
    import json

    body = text.strip()
    fence = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", body, flags=re.S)
    return json.loads(fence.group(1) if fence else body)


def json_valid(prediction: str, reference: str) -> float:
    """1 when the prediction is valid JSON (optionally in a ```json fence)."""
    try:
        _json(prediction)
    except ValueError:
        return 0.0
    return 1.0


def json_fields(prediction: str, reference: str) -> float:
    """Share of the reference object's top-level fields that the prediction has with an equal value; 0 when the
    prediction is not a JSON object. For a non-object reference: 1 when the two values are equal."""
    want = _json(reference)
    try:
        got = _json(prediction)
    except ValueError:
        return 0.0
    if not isinstance(want, dict):
        return float(got == want)
    if not isinstance(got, dict) or not want:
        return float(got == want)
    return sum(1 for k, v in want.items() if k in got and got[k] == v) / len(want)


def parse_numbered_list(text: str) -> list[str] | None:
    """The items of a list written exactly as "1. item" lines (or one Chinese list style, `LIST_LINE`) numbered
    1..n and nothing else; else None."""
    lines = text.strip().split("\n")
    items, style = [], None
    for k, line in enumerate(lines, start=1):
        m = LIST_LINE.match(line.strip())
        if not m or list_number(m) != k:
            return None
        this = next(i for i in range(1, 6) if m.group(i))  # which style: one list keeps one
        if style not in (None, this):
            return None
        style = this
        items.append(m.group(6).strip())
    return items


def count_list(prediction: str, reference: str) -> float:
    """The demo task: 1 when the prediction is a well-formed numbered list with as many items as the reference.

    The required count N is read from the reference answer (itself an N-item list). Any text before or after
    the list, a skipped or repeated number, or a wrong count scores 0.
    """
    want = parse_numbered_list(reference)
    got = parse_numbered_list(prediction)
    if want is None:
        raise ValueError(f"count_list: the reference is not a numbered list: {reference!r}")
    return float(got is not None and len(got) == len(want))


def count_close(prediction: str, reference: str) -> float:
    """A graded `count_list`: max(0, 1 - |k - N| / N), where k counts the prediction's lines written "k. item"
    (numbered in any order, other lines ignored) and N is the reference's item count. It is partial credit for a
    reward (task grpo), where a list one item short is nearer the goal than no list: as a score it says nothing
    about the format, so report it beside count_list, not for it."""
    want = parse_numbered_list(reference)
    if want is None:
        raise ValueError(f"count_close: the reference is not a numbered list: {reference!r}")
    found = sum(1 for line in prediction.strip().split("\n") if LIST_LINE.match(line.strip()))
    return max(0.0, 1.0 - abs(found - len(want)) / len(want))


def list_problems(prediction: str, reference: str) -> list[str]:
    """Why a reader would not accept `prediction` as the list the reference asks for (empty: they would).

    The format and count of `count_list`, then the content: every item distinct after normalising case, accents
    and spacing (demo.count_list.item_key; "Cars" repeats "car"), none empty or naming the category itself, and,
    when the reference's items come from one of the demo generator's categories, every item a member of it: one of
    the generator's items or of its list of further plausible members (demo.count_list.MORE_MEMBERS). An item
    outside both is counted wrong, so a rare but valid member can only lower the score, never raise it."""
    from weitiao.demo.count_list import categories_of, category_names, is_member, item_key, singular_forms

    want = parse_numbered_list(reference)
    if want is None:
        raise ValueError(f"list_correct: the reference is not a numbered list: {reference!r}")
    got = parse_numbered_list(prediction)
    if got is None:
        return ["not a numbered list"]
    found = [] if len(got) == len(want) else [f"{len(got)} items, {len(want)} asked"]
    categories = categories_of(want)
    own_names = set().union(*(category_names(c) for c in categories)) if categories else set()
    seen: set[str] = set()
    for k, item in enumerate(got, start=1):
        forms = singular_forms(item_key(item))
        if not item_key(item):
            found.append(f"item {k} is empty")
        elif forms & seen:
            found.append(f"item {k} repeats {item!r}")
        elif forms & own_names:
            found.append(f"item {k} names the category")
        elif categories and not is_member(item, categories):
            found.append(f"item {k} {item!r} is not one of the {' or '.join(categories)}")
        seen |= forms
    return found


def list_correct(prediction: str, reference: str) -> float:
    """The demo task as a reader checks it: 1 when `list_problems` finds nothing (the right count of distinct,
    real members of the category in the numbered format), else 0. `count_list` is the format-only score."""
    return float(not list_problems(prediction, reference))


METRICS: dict[str, Callable[[str, str], float]] = {
    "exact_match": exact_match,
    "exact_match_loose": exact_match_loose,
    "count_list": count_list,
    "count_close": count_close,
    "list_correct": list_correct,
    "rouge-1": rouge_1,
    "rouge-2": rouge_2,
    "rouge-l": rouge_l,
    "bleu-4": bleu_4,
    "chrf": chrf,
    "json_valid": json_valid,
    "json_fields": json_fields,
}

# A format-only or lenient metric -> the metric that also checks what it lets through. When a config names both,
# the stricter one decides which rows improved or regressed in the report, so a reader sees the rows it fails.
STRICTER = {"count_list": "list_correct", "exact_match_loose": "exact_match", "json_valid": "json_fields"}


def deciding_metric(names: list[str]) -> str | None:
    """The metric that sorts rows into improved/regressed: the first of `names` (in the config's order), or
    the stricter counterpart of it that `names` also holds."""
    if not names:
        return None
    first = names[0]
    while STRICTER.get(first) in names:
        first = STRICTER[first]
    return first


def user_metric(name: str) -> Callable[[str, str], float]:
    """The function named `module:function`; raises ValueError with a reason a config error can show."""
    import importlib
    import sys

    module_name, _, func_name = name.partition(":")
    if not module_name or not func_name:
        raise ValueError("a user metric is written module:function")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # the working directory, like `python -m`
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"cannot import {module_name!r} ({err})") from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ValueError(f"{module_name!r} has no function {func_name!r}")
    return func


def metric(name: str) -> Callable[[str, str], float]:
    return METRICS[name] if name in METRICS else user_metric(name)


def score(names: list[str], predictions: list[str], references: list[str]) -> tuple[dict, list[dict]]:
    """Mean of each metric, and the per-row scores."""
    funcs = {n: metric(n) for n in names}
    per_row = [{n: float(funcs[n](p, r)) for n in names} for p, r in zip(predictions, references)]
    means = {n: (sum(row[n] for row in per_row) / len(per_row) if per_row else float("nan")) for n in names}
    return means, per_row
