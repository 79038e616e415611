from __future__ import annotations

from pathlib import Path

from weitiao.demo.count_list import CATEGORIES, build_splits, write_splits
from weitiao.evaluation.metrics import count_list, parse_numbered_list

REPO = Path(__file__).resolve().parents[2]


def test_bundled_files_are_exactly_the_generator_output(tmp_path):
    written = write_splits(tmp_path)
    for name, path in written.items():
        bundled = REPO / "examples" / "data" / "count_list" / f"{name}.jsonl"
        assert bundled.read_text() == path.read_text(), f"{bundled} differs: run weitiao data demo"


def test_splits_are_disjoint_and_answers_are_valid():
    splits = build_splits()
    combos = {name: {(r["meta"]["category"], r["meta"]["n"], r["meta"]["phrasing"]) for r in rows}
              for name, rows in splits.items()}
    assert not (combos["train"] & combos["test"]) and not (combos["train"] & combos["val"])
    for rows in splits.values():
        for r in rows:
            answer = r["messages"][1]["content"]
            items = parse_numbered_list(answer)
            assert len(items) == r["meta"]["n"] and len(set(items)) == len(items)
            assert {i.lower() for i in items} <= {i.lower() for i in CATEGORIES[r["meta"]["category"]]}
            assert count_list(answer, answer) == 1.0
    ns = [r["meta"]["n"] for r in splits["test"]]
    assert set(ns) == set(range(1, 11))  # every count is tested


def test_bundled_intent_files_are_the_generator_output_and_test_texts_are_unseen(tmp_path):
    from weitiao.demo import support_intent

    for name, path in support_intent.write_splits(tmp_path).items():
        bundled = REPO / "examples" / "data" / "support_intent" / f"{name}.jsonl"
        assert bundled.read_text() == path.read_text(), f"{bundled} differs: run weitiao data demo --task ..."
    splits = support_intent.build_splits()
    train = {r["text"] for r in splits["train"]}
    assert not train & {r["text"] for r in splits["test"]} and not train & {r["text"] for r in splits["val"]}
    for rows in splits.values():  # balanced classes
        counts = [sum(r["label"] == k for r in rows) for k in support_intent.INTENTS]
        assert max(counts) - min(counts) <= 1


def test_the_chinese_demo_is_deterministic_disjoint_and_its_answers_score_right():
    from weitiao.demo.count_list_zh import CATEGORIES_ZH, build_splits
    from weitiao.evaluation.metrics import count_list, list_correct

    splits = build_splits(0)
    assert build_splits(0) == splits and {k: len(v) for k, v in splits.items()} == {"train": 480, "val": 40,
                                                                                     "test": 80}
    combos = {k: {(r["meta"]["category"], r["meta"]["n"], r["meta"]["phrasing"]) for r in v}
              for k, v in splits.items()}
    assert not combos["train"] & combos["test"] and not combos["train"] & combos["val"]
    for row in splits["test"]:
        question, reference = (m["content"] for m in row["messages"])
        assert str(row["meta"]["n"]) in question and row["meta"]["category"] in question
        assert count_list(reference, reference) == list_correct(reference, reference) == 1.0
        assert all(line.split(". ", 1)[1] in CATEGORIES_ZH[row["meta"]["category"]]
                   for line in reference.splitlines())
