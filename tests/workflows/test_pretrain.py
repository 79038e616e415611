"""task: pretrain on the tiny Llama: plain-text documents (a folder of .txt files and jsonl rows) cut into
max_length pieces with nothing dropped, every token trained, held-out perplexity before and after; an empty
corpus is one clear error. The bundled model's numbers: docs/guides/training.md."""
from __future__ import annotations

import json
import math

import yaml

from conftest import run_cli
from weitiao.config import load_config
from weitiao.workflows import sft

WORDS = ("the model reads each document once and learns the words of its domain, one token after another. "
         "weitiao cuts a long document into pieces instead of dropping it. ")


def write_corpus(folder):
    (folder / "train").mkdir(parents=True)
    for i in range(3):
        (folder / "train" / f"doc{i}.txt").write_text(f"Document {i}. " + WORDS * (4 + 3 * i))
    (folder / "test.jsonl").write_text("".join(json.dumps({"text": f"Held-out {i}. " + WORDS * 3}) + "\n"
                                               for i in range(2)))
    return folder


def pretrain_config(path, model_dir, corpus, out_dir, **data):
    cfg = {"task": "pretrain", "model": {"name_or_path": str(model_dir)},
           "data": {"format": "text", "train": str(corpus / "train"), "test": str(corpus / "test.jsonl"),
                    "max_length": 64, **data},
           "method": {"name": "lora", "lora": {"r": 4, "alpha": 8}},
           "train": {"epochs": 3, "batch_size": 4, "learning_rate": 2e-2, "logging_steps": 1, "precision": "fp32"},
           "eval": {"metrics": []},
           "output": {"dir": str(out_dir)}}
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_long_documents_are_cut_into_pieces_and_the_held_out_perplexity_falls(tmp_path, tiny_model_dir,
                                                                               tiny_tokenizer):
    corpus = write_corpus(tmp_path / "corpus")
    result = sft.run(load_config(pretrain_config(tmp_path / "c.yaml", tiny_model_dir, corpus, tmp_path / "run")))
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    # each document (its text stripped, as every text field is) with its end-of-document token, in
    # ceil(tokens / 64) pieces; all of them trained on
    lengths = [len(tiny_tokenizer((corpus / "train" / f"doc{i}.txt").read_text().strip() + tiny_tokenizer.eos_token,
                                  add_special_tokens=False)["input_ids"]) for i in range(3)]
    assert report["train_documents"] == 3 and report["train_tokens"] == sum(lengths)
    assert report["train_pieces"] == sum(math.ceil(n / 64) for n in lengths) > 3
    assert report["train_trained_tokens"] == report["train_tokens"]
    assert report["train_truncated"] == report["train_overlong_dropped"] == 0
    test = result.metrics["test"]
    assert test["tuned"]["perplexity"] < 0.75 * test["base"]["perplexity"], test
    rows = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == report["test_pieces"] and any("piece 1/" in r["where"] for r in rows)
    assert all(r["tuned_loss"] < r["base_loss"] for r in rows)


def test_an_empty_corpus_is_one_clear_error(tmp_path, tiny_model_dir):
    corpus = tmp_path / "empty"
    (corpus / "train").mkdir(parents=True)
    (corpus / "train" / "blank.txt").write_text("  \n")
    (corpus / "test.jsonl").write_text(json.dumps({"text": "held out"}) + "\n")
    proc = run_cli("train", pretrain_config(tmp_path / "c.yaml", tiny_model_dir, corpus, tmp_path / "run"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "data.train: no usable training rows" in proc.stderr and not (tmp_path / "run").exists()
