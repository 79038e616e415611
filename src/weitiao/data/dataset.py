"""From config to train/val/test examples, and from examples to token ids.

`load_splits` reads every file, converts every row to the canonical form and reports all bad rows at once (file
and line for each), before any model is loaded or any output is written. `encode_split` applies the chat template
and label mask, and truncates or drops over-long rows as configured, counting what it did.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from weitiao.config import DataConfig
from weitiao.data.encode import IGNORE_INDEX, Encoded, encode
from weitiao.data.formats import Example, RowProblem, is_empty_row, to_example
from weitiao.data.readers import MAX_REPORTED, read_rows, resolve_paths
from weitiao.data.templates import ChatTemplate
from weitiao.errors import DataError


@dataclass
class Splits:
    train: list[Example]
    val: list[Example]
    test: list[Example]
    report: dict = field(default_factory=dict)  # counts of what cleaning and splitting did


def _examples(entries: list[str], cfg: DataConfig, base_dir: str, name: str, report: dict) -> list[Example]:
    paths = resolve_paths(entries, base_dir, f"data.{name}")
    rows = read_rows(paths)
    examples, problems, empty = [], [], 0
    for row in rows:
        if is_empty_row(row.data):
            empty += 1
            continue
        try:
            examples.append(to_example(row, cfg.format, cfg.columns, cfg.system))
        except RowProblem as err:
            problems.append(f"{row.where}: {err} (format {cfg.format!r})")
    if problems:
        raise DataError(problems[:MAX_REPORTED], total=len(problems))
    report[f"{name}_files"] = [str(p) for p in paths]
    report[f"{name}_rows_read"] = len(rows)
    report[f"{name}_empty_rows_dropped"] = empty
    return examples


def _key(ex: Example):
    return ex.text if ex.text is not None else ex.messages


def load_splits(cfg: DataConfig, base_dir: str) -> Splits:
    report: dict = {}
    train = _examples(cfg.train, cfg, base_dir, "train", report)
    if cfg.drop_duplicates:
        seen, unique = set(), []
        for ex in train:
            if _key(ex) not in seen:
                seen.add(_key(ex))
                unique.append(ex)
        report["train_duplicates_dropped"] = len(train) - len(unique)
        train = unique
    val = _examples(cfg.val, cfg, base_dir, "val", report) if cfg.val else []
    test = _examples(cfg.test, cfg, base_dir, "test", report) if cfg.test else []
    n_val = round(len(train) * cfg.val_ratio) if not cfg.val else 0
    n_test = round(len(train) * cfg.test_ratio) if not cfg.test else 0
    if n_val or n_test:
        order = list(range(len(train)))
        random.Random(cfg.split_seed).shuffle(order)
        held = [train[i] for i in order[: n_val + n_test]]
        train = [train[i] for i in sorted(order[n_val + n_test:])]
        val, test = (val or held[:n_val]), (test or held[n_val:])
    if not train:
        raise DataError([f"data.train: no usable training rows in {', '.join(cfg.train)}"])
    report.update(train_rows=len(train), val_rows=len(val), test_rows=len(test))
    return Splits(train, val, test, report)


def encode_split(examples: list[Example], template: ChatTemplate, tokenizer, cfg: DataConfig,
                 name: str, report: dict) -> list[Encoded]:
    out, truncated, dropped, problems = [], 0, 0, []
    for ex in examples:
        try:
            enc = encode(ex, template, tokenizer, cfg.loss_on)
        except RowProblem as err:
            problems.append(f"{ex.where}: {err}")
            continue
        if len(enc.input_ids) > cfg.max_length:
            if cfg.overlong == "drop":
                dropped += 1
                continue
            enc = Encoded(enc.input_ids[: cfg.max_length], enc.labels[: cfg.max_length])
            if all(label == IGNORE_INDEX for label in enc.labels):
                dropped += 1  # truncation removed every trained token: nothing left to learn from
                continue
            truncated += 1
        out.append(enc)
    if problems:
        raise DataError(problems[:MAX_REPORTED], total=len(problems))
    report[f"{name}_truncated"] = truncated
    report[f"{name}_overlong_dropped"] = dropped
    report[f"{name}_tokens"] = sum(len(e.input_ids) for e in out)
    report[f"{name}_trained_tokens"] = sum(sum(1 for x in e.labels if x != IGNORE_INDEX) for e in out)
    return out


def to_hf_dataset(encoded: list[Encoded]):
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": [e.input_ids for e in encoded], "labels": [e.labels for e in encoded],
                              "length": [len(e.input_ids) for e in encoded]})


@dataclass
class PadCollator:
    """Pads a batch to its longest row: input ids with pad_id, labels with -100, and an attention mask."""

    pad_id: int
    pad_to_multiple_of: int = 8

    def __call__(self, features: list[dict]):
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        m = self.pad_to_multiple_of
        width = ((longest + m - 1) // m) * m if m else longest
        ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, :n] = torch.tensor(f["input_ids"])
            labels[i, :n] = torch.tensor(f["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}
