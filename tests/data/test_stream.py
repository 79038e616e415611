"""data.streaming: the training split read, checked and tokenized as training consumes it (data/stream.py), on the
tiny model, through the CLI as a user runs it."""
from __future__ import annotations

import json

from conftest import run_cli, write_config
from weitiao.config import load_config
from weitiao.data.dataset import encode_documents, load_splits
from weitiao.data.splits import open_stream
from weitiao.data.stream import TrainStream
from weitiao.data.templates import resolve_template


def streamed(tmp_path, model_dir, data_dir, name: str, data=None, train=None):
    return write_config(tmp_path / f"{name}.yaml", model_dir, data_dir, tmp_path / name,
                        data={"streaming": True, "shuffle_buffer": 8, **(data or {})},
                        train={"max_steps": 3, "batch_size": 4, "eval_steps": 3, **(train or {})})


def test_a_streamed_split_trains_on_the_rows_it_reads_and_counts_them(tmp_path, tiny_model_dir, demo_data_dir):
    done = run_cli("train", streamed(tmp_path, tiny_model_dir, demo_data_dir, "run"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "train streamed from" in done.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    counts = metrics["data"]["streamed"]
    # 3 steps of 4 rows: exactly 12 rows handed to training, however many the shuffle window read ahead
    assert metrics["data"]["train_rows"] == counts["train_rows"] == 12
    assert counts["train_rows_read"] >= 12 and counts["train_passes"] == 1
    assert 12 * 8 < counts["train_tokens"] <= 12 * 128 and 0 < counts["train_trained_tokens"] < counts["train_tokens"]
    assert metrics["train"]["tokens_per_s"] > 0 and metrics["test"]["tuned"] is not None


def test_a_stream_shorter_than_the_steps_is_read_again(tmp_path, tiny_model_dir, demo_data_dir):
    """A stream ends: the Trainer starts it again for the next pass (an epoch), and the counts show it."""
    rows = (demo_data_dir / "train.jsonl").read_text().splitlines()[:6]
    (tmp_path / "small").mkdir()
    (tmp_path / "small" / "train.jsonl").write_text("\n".join(rows) + "\n")
    for split in ("val", "test"):
        (tmp_path / "small" / f"{split}.jsonl").write_text((demo_data_dir / f"{split}.jsonl").read_text())
    done = run_cli("train", streamed(tmp_path, tiny_model_dir, tmp_path / "small", "run", train={"batch_size": 2,
                                                                                              "max_steps": 5}))
    assert done.returncode == 0, done.stderr[-3000:]
    counts = json.loads((tmp_path / "run" / "metrics.json").read_text())["data"]["streamed"]
    assert counts["train_rows"] == 10 and counts["train_passes"] == 2 and counts["train_rows_read"] == 12


def test_a_bad_row_in_the_stream_stops_the_run_naming_its_line_or_is_skipped(tmp_path, tiny_model_dir,
                                                                           demo_data_dir):
    rows = (demo_data_dir / "train.jsonl").read_text().splitlines()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "train.jsonl").write_text("\n".join(rows[:5] + ['{"messages": "not a list"}'] + rows[5:])
                                                  + "\n")
    for split in ("val", "test"):
        (tmp_path / "bad" / f"{split}.jsonl").write_text((demo_data_dir / f"{split}.jsonl").read_text())
    stopped = run_cli("train", streamed(tmp_path, tiny_model_dir, tmp_path / "bad", "stop",
                                        data={"shuffle_buffer": 1}))
    assert stopped.returncode != 0 and "Traceback" not in stopped.stderr
    assert f"{tmp_path / 'bad' / 'train.jsonl'} line 6" in stopped.stderr
    assert "found while training" in stopped.stderr and "training stopped at step 0" in stopped.stderr
    assert json.loads((tmp_path / "stop" / "run.json").read_text())["status"] == "failed"
    (tmp_path / "bad" / "train.jsonl").write_text("\n".join(rows) + "\n")  # the row fixed: --resume finishes it
    resumed = run_cli("train", streamed(tmp_path, tiny_model_dir, tmp_path / "bad", "stop",
                                        data={"shuffle_buffer": 1}), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((tmp_path / "stop" / "run.json").read_text())["status"] == "finished"
    (tmp_path / "bad" / "train.jsonl").write_text("\n".join(rows[:5] + ['{"messages": "not a list"}'] + rows[5:])
                                                  + "\n")

    skipped = run_cli("train", streamed(tmp_path, tiny_model_dir, tmp_path / "bad", "skip",
                                        data={"skip_bad_rows": True}))
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    lines = (tmp_path / "skip" / "skipped_rows.jsonl").read_text().splitlines()
    assert [json.loads(line)["where"] for line in lines] == [f"{tmp_path / 'bad' / 'train.jsonl'} line 6"]
    counts = json.loads((tmp_path / "skip" / "metrics.json").read_text())["data"]["streamed"]
    assert counts["train_bad_rows_skipped"] == 1


def test_an_empty_stream_and_a_stream_without_max_steps_are_refused_before_loading(tmp_path, tiny_model_dir,
                                                                                 demo_data_dir):
    (tmp_path / "nodata").mkdir()
    (tmp_path / "nodata" / "train.jsonl").write_text("\n\n")
    for split in ("val", "test"):
        (tmp_path / "nodata" / f"{split}.jsonl").write_text((demo_data_dir / f"{split}.jsonl").read_text())
    empty = run_cli("train", streamed(tmp_path, tiny_model_dir, tmp_path / "nodata", "empty"))
    assert empty.returncode != 0 and "Traceback" not in empty.stderr
    assert "data.train: no usable training rows" in empty.stderr and not (tmp_path / "empty").exists()

    endless = run_cli("validate", streamed(tmp_path, tiny_model_dir, demo_data_dir, "endless",
                                           data={"val_ratio": 0.1}, train={"max_steps": 0, "epochs": 1}))
    assert endless.returncode != 0 and "Traceback" not in endless.stderr
    assert "data.streaming: set train.max_steps" in endless.stderr
    assert "data.streaming: a stream cannot be split by val_ratio" in endless.stderr


def test_a_streamed_corpus_of_documents_is_cut_into_pieces_as_it_is_read(tmp_path, tiny_model_dir, tiny_tokenizer):
    """task pretrain: a document longer than max_length becomes several pieces, none dropped, as when read at once."""
    (tmp_path / "docs").mkdir()
    long_doc = " ".join(f"word{i}" for i in range(300))
    (tmp_path / "docs" / "a.txt").write_text(long_doc)
    (tmp_path / "docs" / "b.txt").write_text("a short document")
    path = write_config(tmp_path / "c.yaml", tiny_model_dir, tmp_path, tmp_path / "out",
                        data={"format": "text", "train": [str(tmp_path / "docs")], "val": [], "test": [],
                              "max_length": 64, "streaming": True}, train={"max_steps": 2})
    path.write_text("task: pretrain\n" + path.read_text())
    cfg = load_config(path)
    splits = load_splits(cfg.data, cfg.base_dir)
    open_stream(cfg, splits, None)
    assert isinstance(splits.stream, TrainStream) and splits.train == []
    pieces = list(splits.stream.encoded(resolve_template(tiny_tokenizer, "auto"), tiny_tokenizer, documents=True))
    whole = encode_documents(list(splits.stream.examples()), resolve_template(tiny_tokenizer, "auto"), tiny_tokenizer,
                             cfg.data, "train", {})[0]
    assert [p["input_ids"] for p in pieces] == [e.input_ids for e in whole]  # the same pieces as read at once
    assert len(pieces) >= 3 and all(len(p["input_ids"]) <= 64 for p in pieces)
    assert all(p["labels"] == p["input_ids"] for p in pieces)
    done = run_cli("train", path)  # and it trains: 2 steps of 4 pieces, every token of each piece trained
    assert done.returncode == 0, done.stderr[-3000:]
    counts = json.loads((tmp_path / "out" / "metrics.json").read_text())["data"]["streamed"]
    assert counts["train_rows"] == 8 and counts["train_tokens"] == counts["train_trained_tokens"] > 8
