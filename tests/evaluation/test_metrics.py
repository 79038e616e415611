from __future__ import annotations

import pytest

from weitiao.evaluation.metrics import count_list, exact_match, parse_numbered_list, score

REF3 = "1. Apple\n2. Pear\n3. Plum"


@pytest.mark.parametrize("prediction,expected", [
    ("1. Kiwi\n2. Fig\n3. Lime", 1.0),
    ("  1. Kiwi\n2. Fig\n3. Lime\n", 1.0),
    ("1. Kiwi\n2. Fig", 0.0),                              # wrong count
    ("1. Kiwi\n2. Fig\n3. Lime\n4. Pear", 0.0),
    ("Here are 3 fruits:\n1. Kiwi\n2. Fig\n3. Lime", 0.0),  # preamble
    ("1. Kiwi\n3. Fig\n4. Lime", 0.0),                     # skipped number
    ("1) Kiwi\n2) Fig\n3) Lime", 0.0),                     # other format
    ("1. Kiwi\n\n2. Fig\n3. Lime", 0.0),                   # blank line inside
    ("", 0.0),
])
def test_count_list(prediction, expected):
    assert count_list(prediction, REF3) == expected


def test_count_close_is_partial_credit_for_the_count():
    from weitiao.evaluation.metrics import count_close

    assert count_close(REF3, REF3) == 1.0
    assert count_close("1. Apple\n2. Pear", REF3) == pytest.approx(2 / 3)  # one item short
    assert count_close("Sure!\n1. Apple\n2. Pear\n3. Plum\nEnjoy.", REF3) == 1.0  # other lines do not count ...
    assert count_list("Sure!\n1. Apple\n2. Pear\n3. Plum\nEnjoy.", REF3) == 0.0  # ... count_list refuses them
    assert count_close("Apple, pear, plum", REF3) == 0.0
    assert count_close("\n".join(f"{k}. x" for k in range(1, 8)), REF3) == 0.0  # 7 for 3: clipped at 0
    with pytest.raises(ValueError):
        count_close(REF3, "not a list")


def test_parse_and_exact_match_and_score():
    assert parse_numbered_list(REF3) == ["Apple", "Pear", "Plum"]
    assert exact_match(" a  b ", "a b") == 1.0 and exact_match("a", "b") == 0.0
    means, rows = score(["count_list", "exact_match"], [REF3, "no"], [REF3, REF3])
    assert means == {"count_list": 0.5, "exact_match": 0.5}
    assert rows[1] == {"count_list": 0.0, "exact_match": 0.0}
    with pytest.raises(ValueError):
        count_list(REF3, "not a list")


# A fixed Chinese sample (and one English and one empty prediction) scored by weitiao and, directly, by the
# reference libraries the way LLaMA-Factory's scripts/eval_bleu_rouge.py and ChatGLM's P-Tuning do.
ZH = [
    ("这件衣服的版型很宽松，适合夏天穿。", "这款连衣裙版型宽松，非常适合夏天穿着。"),
    ("北京是中国的首都。", "中国的首都是北京。"),
    ("The cat sat on the mat.", "A cat was sitting on the mat."),
    ("", "完全没有回答。"),
]


def _reference_scores(prediction: str, reference: str) -> dict:
    import jieba
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from rouge_chinese import Rouge

    hypothesis, ref = list(jieba.cut(prediction)), list(jieba.cut(reference))
    if len(" ".join(hypothesis).split()) == 0 or len(" ".join(ref).split()) == 0:
        result = {"rouge-1": {"f": 0.0}, "rouge-2": {"f": 0.0}, "rouge-l": {"f": 0.0}}
    else:
        result = Rouge().get_scores(" ".join(hypothesis), " ".join(ref))[0]
    out = {k: v["f"] for k, v in result.items()}
    out["bleu-4"] = sentence_bleu([list(reference)], list(prediction),
                                  smoothing_function=SmoothingFunction().method3) if prediction else 0.0
    return out


@pytest.mark.parametrize("prediction,reference", ZH)
def test_chinese_rouge_and_bleu_equal_the_reference_libraries(prediction, reference):
    from weitiao.evaluation.metrics import METRICS

    want = _reference_scores(prediction, reference)
    for name in ("rouge-1", "rouge-2", "rouge-l", "bleu-4"):
        assert METRICS[name](prediction, reference) == pytest.approx(want[name], abs=1e-12), name
    if prediction:
        assert 0 < want["rouge-1"] < 1  # the sample is neither trivial nor disjoint


def test_chrf_is_sacrebleus_and_json_and_loose_match():
    from sacrebleu.metrics import CHRF

    from weitiao.evaluation.metrics import METRICS

    pred, ref = ZH[0]
    assert METRICS["chrf"](pred, ref) == pytest.approx(CHRF().sentence_score(pred, [ref]).score / 100)
    assert METRICS["exact_match_loose"]("Paris.", "paris") == 1.0 and METRICS["exact_match"]("Paris.", "paris") == 0
    assert METRICS["exact_match_loose"]("北京。", "北京") == 1.0
    assert METRICS["json_valid"]('```json\n{"a": 1}\n```', "") == 1.0 and METRICS["json_valid"]("{a: 1}", "") == 0.0
    ref_json = '{"name": "Ann", "age": 31, "city": "Oslo"}'
    assert METRICS["json_fields"]('{"name": "Ann", "age": 30, "city": "Oslo", "x": 1}', ref_json) == pytest.approx(2 / 3)
    assert METRICS["json_fields"]("not json", ref_json) == 0.0


def test_user_metric_by_module_and_function(tmp_path, monkeypatch):
    (tmp_path / "my_metrics.py").write_text("def starts_same(p, r):\n    return float(p[:1] == r[:1])\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    means, rows = score(["my_metrics:starts_same"], ["abc", "xyz"], ["axe", "abc"])
    assert means == {"my_metrics:starts_same": 0.5}
    from weitiao.evaluation.metrics import user_metric

    with pytest.raises(ValueError, match="has no function"):
        user_metric("my_metrics:nope")
    with pytest.raises(ValueError, match="cannot import"):
        user_metric("no_such_module_xyz:f")


# ---------------------------------------------------------------- list_correct: what a reader would check

VEHICLES9 = "1. Car\n2. Bus\n3. Truck\n4. Boat\n5. Van\n6. Train\n7. Tram\n8. Plane\n9. Ferry"  # demo reference


@pytest.mark.parametrize("prediction,why", [
    # the quickstart's tuned answer to "Name 9 vehicles, please.": right count and format, a repeat and a non-word
    ("1. Car\n2. Truck\n3. Bus\n4. Train\n5. Scooter\n6. Motorcycle\n7. Scooped\n8. Truck\n9. Boat",
     ["item 7 'Scooped' is not one of the vehicles", "item 8 repeats 'Truck'"]),
    ("1. Car\n2. car\n3. Bus\n4. Train\n5. Tram\n6. Van\n7. Taxi\n8. Ferry\n9. Boat", ["item 2 repeats 'car'"]),
    ("1. Car\n2. Cars\n3. Bus\n4. Train\n5. Tram\n6. Van\n7. Taxi\n8. Ferry\n9. Boat", ["item 2 repeats 'Cars'"]),
    ("1. Car\n2. ...\n3. Bus\n4. Train\n5. Tram\n6. Van\n7. Taxi\n8. Ferry\n9. Boat", ["item 2 is empty"]),
    ("1. Car\n2. Vehicle\n3. Bus\n4. Train\n5. Tram\n6. Van\n7. Taxi\n8. Ferry\n9. Boat",
     ["item 2 names the category"]),
    ("1. Car\n2. Banana\n3. Bus\n4. Train\n5. Tram\n6. Van\n7. Taxi\n8. Ferry\n9. Boat",
     ["item 2 'Banana' is not one of the vehicles"]),
    ("1. Car\n2. Bus", ["2 items, 9 asked"]),
    ("Sure! 1. Car", ["not a numbered list"]),
])
def test_list_correct_scores_repeated_empty_and_off_category_items_zero(prediction, why):
    from weitiao.evaluation.metrics import count_list, list_correct, list_problems

    assert list_problems(prediction, VEHICLES9) == why
    assert list_correct(prediction, VEHICLES9) == 0.0
    if why[0].startswith("item"):  # the format-only metric passes every one of these
        assert count_list(prediction, VEHICLES9) == 1.0


def test_list_correct_accepts_distinct_members_beyond_the_generators_items():
    from weitiao.evaluation.metrics import list_correct

    # Taxi, Scooter, Motorcycle and Helicopter are vehicles the generator never wrote; "The Ferry." normalises
    assert list_correct("1. Car\n2. Taxi\n3. Scooter\n4. Motorcycle\n5. Helicopter\n6. Train\n7. Tram\n8. Bus\n"
                        "9. The Ferry.", VEHICLES9) == 1.0
    assert list_correct("1. Cherries\n2. Strawberry", "1. Apple\n2. Pear") == 1.0  # a plural of a member
    assert list_correct("1. São Paulo", "1. Paris") == 1.0  # accents are ignored: "Sao Paulo" is listed
    # "Cricket" alone is a sport and an insect: either is accepted, nothing else is
    assert list_correct("1. Ant", "1. Cricket") == 1.0 and list_correct("1. Golf", "1. Cricket") == 1.0
    assert list_correct("1. Oak", "1. Cricket") == 0.0


def test_list_correct_outside_the_demo_checks_count_and_distinct_items_only():
    from weitiao.evaluation.metrics import list_correct, list_problems

    reference = "1. Nile\n2. Amazon\n3. Danube"  # rivers: no demo category, so membership is not judged
    assert list_correct("1. Yangtze\n2. Mekong\n3. Volga", reference) == 1.0
    # the answer `weitiao serve` gave to "Name 5 rivers, please."
    assert list_problems("1. Nile\n2. River Nile\n3. River Nile", reference) == ["item 3 repeats 'River Nile'"]
    with pytest.raises(ValueError, match="list_correct: the reference is not a numbered list"):
        list_correct("1. Nile", "Nile")


def test_the_stricter_metric_decides_when_both_are_configured():
    from weitiao.evaluation.metrics import deciding_metric

    assert deciding_metric(["count_list", "list_correct"]) == "list_correct"
    assert deciding_metric(["count_list"]) == "count_list"
    assert deciding_metric(["exact_match_loose", "rouge-l", "exact_match"]) == "exact_match"
    assert deciding_metric(["rouge-l", "count_list", "list_correct"]) == "rouge-l"
    assert deciding_metric([]) is None


def test_chinese_list_styles_count_and_chinese_members_are_judged():
    from weitiao.evaluation.metrics import count_list, list_correct, list_problems, parse_numbered_list

    reference = "1. 苹果\n2. 梨\n3. 香蕉"
    for style in ("1、{}", "1.{}", "1．{}", "（1）{}", "(1) {}", "一、{}", "①{}", "1. {}"):
        lines = "\n".join(style.replace("1", str(k)).replace("一", "一二三"[k - 1]).replace("①", "①②③"[k - 1])
                          .format(item) for k, item in enumerate(["西瓜", "葡萄", "芒果"], start=1))
        assert parse_numbered_list(lines) == ["西瓜", "葡萄", "芒果"], lines
        assert count_list(lines, reference) == list_correct(lines, reference) == 1.0, lines
    assert parse_numbered_list("1、苹果\n2. 香蕉") is None  # one list keeps one style
    assert parse_numbered_list("1.5 apples") is None
    assert list_problems("1. 苹果\n2. 苹果\n3. 梨", reference) == ["item 2 repeats '苹果'"]
    assert list_problems("1. 苹果\n2. 白菜\n3. 梨", reference) == ["item 2 '白菜' is not one of the 水果"]
    assert list_problems("1. 苹果\n2. 水果\n3. 梨", reference) == ["item 2 names the category"]
