from __future__ import annotations

import json

import pytest

from weitiao.config import DataConfig
from weitiao.data.dataset import PadCollator, encode_split, load_splits
from weitiao.data.encode import IGNORE_INDEX
from weitiao.data.templates import resolve_template
from weitiao.errors import DataError


def write_rows(path, n, dup=0, empty=0):
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(n)]
    rows += rows[:dup] + [{"instruction": "", "output": ""}] * empty
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_ratio_split_is_seeded_and_disjoint(tmp_path):
    write_rows(tmp_path / "all.jsonl", 100, dup=5, empty=2)
    cfg = DataConfig(format="alpaca", train=["all.jsonl"], val_ratio=0.1, test_ratio=0.2, split_seed=3)
    a = load_splits(cfg, str(tmp_path))
    b = load_splits(cfg, str(tmp_path))
    assert (len(a.train), len(a.val), len(a.test)) == (70, 10, 20)
    assert a.report["train_duplicates_dropped"] == 5 and a.report["train_empty_rows_dropped"] == 2
    assert [e.messages for e in a.val] == [e.messages for e in b.val]
    keys = lambda xs: {e.messages for e in xs}  # noqa: E731
    assert not (keys(a.train) & keys(a.val)) and not (keys(a.train) & keys(a.test))
    c = load_splits(DataConfig(format="alpaca", train=["all.jsonl"], val_ratio=0.1, split_seed=4), str(tmp_path))
    assert [e.messages for e in c.val] != [e.messages for e in a.val]


def test_bad_rows_across_files_reported_together(tmp_path):
    (tmp_path / "t.jsonl").write_text('{"instruction": "q"}\n{"instruction": "q", "output": "a"}\n'
                                      '{"output": "a"}\n')
    with pytest.raises(DataError) as info:
        load_splits(DataConfig(format="alpaca", train=["t.jsonl"]), str(tmp_path))
    msg = str(info.value)
    assert "t.jsonl line 1: missing field 'output'" in msg and "t.jsonl line 3: missing field 'instruction'" in msg


@pytest.mark.parametrize("policy,kept,truncated,dropped", [("truncate", 3, 1, 0), ("drop", 2, 0, 1)])
def test_overlong_rows_truncated_or_dropped_and_counted(tmp_path, tiny_tokenizer, policy, kept, truncated,
                                                         dropped):
    rows = [{"instruction": "q", "output": "a"}, {"instruction": "q2", "output": "b"},
            {"instruction": "q3", "output": " ".join(["word"] * 60)}]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = DataConfig(format="alpaca", train=["t.jsonl"], max_length=24, overlong=policy)
    splits = load_splits(cfg, str(tmp_path))
    tpl = resolve_template(tiny_tokenizer, "auto")
    enc = encode_split(splits.train, tpl, tiny_tokenizer, cfg, "train", splits.report)
    assert len(enc) == kept
    assert splits.report["train_truncated"] == truncated and splits.report["train_overlong_dropped"] == dropped
    assert all(len(e.input_ids) <= 24 for e in enc)


def test_pad_collator():
    batch = PadCollator(pad_id=0, pad_to_multiple_of=4)([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
                                                          {"input_ids": [8], "labels": [8]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [8, 0, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7, IGNORE_INDEX], [8] + [IGNORE_INDEX] * 3]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
