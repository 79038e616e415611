"""From config to train/val/test examples, and from examples to token ids.

`load_splits` reads every file, converts every row to the canonical form and reports all bad rows at once (file
and line for each), before any model is loaded or any output is written. `encode_split` applies the chat template
and label mask, and truncates or drops over-long rows as configured, counting what it did.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from weitiao.config import DataConfig
from weitiao.data.encode import IGNORE_INDEX, Encoded, EncodedPair, encode, encode_pair
from weitiao.data.formats import Example, RowProblem, is_empty_row, to_example
from weitiao.data.readers import MAX_REPORTED, BadRow, read_rows, resolve_paths
from weitiao.data.templates import ChatTemplate
from weitiao.errors import DataError


@dataclass
class Splits:
    train: list[Example]
    val: list[Example]
    test: list[Example]
    report: dict = field(default_factory=dict)  # counts of what cleaning and splitting did
    bad: list[BadRow] = field(default_factory=list)  # rows that could not be used (raised unless skipping)
    duplicates: list[tuple[Example, Example]] = field(default_factory=list)  # (dropped, kept first)
    # data.streaming: where the training rows are (train stays empty), and the data.stream.TrainStream over them
    # that splits.read_splits opens
    train_paths: list | None = None
    stream: object | None = None


def _examples(paths: list, cfg: DataConfig, name: str, report: dict, bad: list[BadRow]) -> list[Example]:
    rows, unreadable = read_rows(paths)
    bad.extend(unreadable)
    examples, empty = [], 0
    for row in rows:
        if is_empty_row(row.data):
            empty += 1
            continue
        try:
            examples.append(to_example(row, cfg.format, cfg.columns, cfg.system))
        except RowProblem as err:
            bad.append(BadRow(row.where, err.kind, f"{err} (format {cfg.format!r})"))
    report[f"{name}_files"] = [str(p) for p in paths]
    report[f"{name}_rows_read"] = len(rows) + len(unreadable)
    report[f"{name}_empty_rows_dropped"] = empty
    report[f"{name}_bad_rows"] = len(unreadable) + (len(rows) - empty - len(examples))
    return examples


def example_key(ex: Example):
    """Identity of a row for exact de-duplication (its canonical content, not its source line)."""
    return (ex.text, ex.label) if ex.text is not None else (ex.messages, ex.rejected)


def load_splits(cfg: DataConfig, base_dir: str, skip_bad_rows: bool = False, need_train: bool = True) -> Splits:
    """Read and convert every row. Bad rows raise one DataError listing them all, unless `skip_bad_rows`.
    `need_train`: no usable training row is an error (`data check` reports the bad rows instead)."""
    report: dict = {}
    bad: list[BadRow] = []
    paths, missing = {}, []
    for name in ("train", "val", "test"):  # every split's missing file or hub dataset, reported together
        try:
            paths[name] = resolve_paths(getattr(cfg, name), base_dir, f"data.{name}", cfg.format == "text",
                                        streaming=cfg.streaming and name == "train")
        except DataError as err:
            missing += err.problems
    if missing:
        raise DataError(missing)
    if cfg.streaming:
        report["train_files"] = [str(p) for p in paths["train"]]
    train = [] if cfg.streaming else _examples(paths["train"], cfg, "train", report, bad)
    val = _examples(paths["val"], cfg, "val", report, bad) if cfg.val else []
    test = _examples(paths["test"], cfg, "test", report, bad) if cfg.test else []
    if bad and not skip_bad_rows:
        raise DataError([str(b) for b in bad[:MAX_REPORTED]], total=len(bad))
    duplicates = []
    if cfg.drop_duplicates:
        first: dict = {}
        unique = []
        for ex in train:
            key = example_key(ex)
            if key in first:
                duplicates.append((ex, first[key]))
            else:
                first[key] = ex
                unique.append(ex)
        train = unique
    report["train_duplicates_dropped"] = len(duplicates)
    n_val = round(len(train) * cfg.val_ratio) if not cfg.val else 0
    n_test = round(len(train) * cfg.test_ratio) if not cfg.test else 0
    if n_val or n_test:
        order = list(range(len(train)))
        random.Random(cfg.split_seed).shuffle(order)
        held = [train[i] for i in order[: n_val + n_test]]
        train = [train[i] for i in sorted(order[n_val + n_test:])]
        val, test = (val or held[:n_val]), (test or held[n_val:])
    if not train and need_train and not cfg.streaming:
        raise DataError([f"data.train: no usable training rows in {', '.join(cfg.train)}"])
    report.update(train_rows=len(train), val_rows=len(val), test_rows=len(test), bad_rows_skipped=len(bad))
    if cfg.streaming:
        report.update(train_rows=None, train_duplicates_dropped=None, train_empty_rows_dropped=None)
    return Splits(train, val, test, report, bad, duplicates, paths["train"] if cfg.streaming else None)


def encode_split(examples: list[Example], template: ChatTemplate, tokenizer, cfg: DataConfig, name: str,
                 report: dict, skipped: list[BadRow] | None = None, lengths: list[int] | None = None) -> list[Encoded]:
    """Token ids and labels of each example. Rows dropped as over-long are appended to `skipped` (if given);
    rows the template cannot render raise a DataError, or are appended to `skipped` too. `lengths` receives
    every row's token count before truncation."""
    out, truncated, dropped, problems = [], 0, 0, []
    for ex in examples:
        try:
            enc = encode(ex, template, tokenizer, cfg.loss_on)
        except RowProblem as err:
            problems.append(BadRow(ex.where, "template", str(err)))
            continue
        if lengths is not None:
            lengths.append(len(enc.input_ids))
        if len(enc.input_ids) > cfg.max_length:
            too_long = BadRow(ex.where, "over-long",
                              f"{len(enc.input_ids)} tokens > data.max_length {cfg.max_length}")
            if cfg.overlong == "drop":
                dropped += 1
                if skipped is not None:
                    skipped.append(too_long)
                continue
            enc = Encoded(enc.input_ids[: cfg.max_length], enc.labels[: cfg.max_length])
            if all(label == IGNORE_INDEX for label in enc.labels):
                dropped += 1  # truncation removed every trained token: nothing left to learn from
                if skipped is not None:
                    skipped.append(too_long)
                continue
            truncated += 1
        out.append(enc)
    if problems:
        if skipped is None:
            raise DataError([str(b) for b in problems[:MAX_REPORTED]], total=len(problems))
        skipped.extend(problems)
    report[f"{name}_truncated"] = truncated
    report[f"{name}_overlong_dropped"] = dropped
    report[f"{name}_tokens"] = sum(len(e.input_ids) for e in out)
    report[f"{name}_trained_tokens"] = sum(sum(1 for x in e.labels if x != IGNORE_INDEX) for e in out)
    return out


def encode_documents(examples: list[Example], template: ChatTemplate, tokenizer, cfg: DataConfig, name: str,
                     report: dict) -> tuple[list[Encoded], list[Example]]:
    """task pretrain: each text row is a document, tokenized with its end-of-document token and cut into pieces
    of at most `max_length` tokens, every token trained on: nothing is truncated or dropped. Each piece is its own
    example (padding-free batches attend within it only, so attention never crosses a document boundary), and
    comes back with an Example of its own text and place (`where` plus "piece k/n"), in the same order."""
    import dataclasses

    encoded, pieces = [], []
    for ex in examples:
        ids = encode(ex, template, tokenizer, "all").input_ids
        chunks = [ids[i:i + cfg.max_length] for i in range(0, len(ids), cfg.max_length)]
        for k, chunk in enumerate(chunks):
            encoded.append(Encoded(chunk, list(chunk)))
            where = ex.where if len(chunks) == 1 else f"{ex.where} piece {k + 1}/{len(chunks)}"
            pieces.append(dataclasses.replace(ex, text=tokenizer.decode(chunk), where=where))
    report.update({f"{name}_truncated": 0, f"{name}_overlong_dropped": 0, f"{name}_documents": len(examples),
                   f"{name}_pieces": len(encoded), f"{name}_tokens": sum(len(e.input_ids) for e in encoded)})
    report[f"{name}_trained_tokens"] = report[f"{name}_tokens"]
    return encoded, pieces


def encode_pair_split(examples: list[Example], template: ChatTemplate, tokenizer, cfg: DataConfig, name: str,
                      report: dict, skipped: list[BadRow] | None = None,
                      lengths: list[int] | None = None) -> list[EncodedPair]:
    """Token ids of each preference pair (`encode_pair`). A pair longer than `max_length` (prompt plus the longer
    answer) is dropped, or with `overlong: truncate` its answers are cut at the end; a prompt that leaves no room
    for an answer is always dropped. Counts go to `report`, and `lengths` receives every pair's length before
    truncation, as for `encode_split`."""
    out, truncated, dropped, problems = [], 0, 0, []
    for ex in examples:
        try:
            pair = encode_pair(ex, template, tokenizer)
        except RowProblem as err:
            problems.append(BadRow(ex.where, "template", str(err)))
            continue
        length = len(pair.prompt_ids) + max(len(pair.chosen_ids), len(pair.rejected_ids))
        if lengths is not None:
            lengths.append(length)
        if length > cfg.max_length:
            room = cfg.max_length - len(pair.prompt_ids)
            if cfg.overlong == "drop" or room < 1:
                dropped += 1
                if skipped is not None:
                    skipped.append(BadRow(ex.where, "over-long", f"{length} tokens (prompt {len(pair.prompt_ids)} "
                                          f"+ longer answer) > data.max_length {cfg.max_length}"))
                continue
            pair = EncodedPair(pair.prompt_ids, pair.chosen_ids[:room], pair.rejected_ids[:room])
            truncated += 1
        out.append(pair)
    if problems:
        if skipped is None:
            raise DataError([str(b) for b in problems[:MAX_REPORTED]], total=len(problems))
        skipped.extend(problems)
    report[f"{name}_truncated"] = truncated
    report[f"{name}_overlong_dropped"] = dropped
    report[f"{name}_tokens"] = sum(len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in out)
    report[f"{name}_trained_tokens"] = sum(len(p.chosen_ids) + len(p.rejected_ids) for p in out)
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


@dataclass
class PaddingFreeCollator:
    """A batch without padding: its examples concatenated into one row of shape (1, sum of lengths), with position
    ids restarting at 0 for each example, no attention mask, and `use_cache=False`.

    transformers' decoders turn restarting position ids into a block-diagonal causal mask when there is neither an
    attention mask nor a KV cache (masking_utils.find_packed_sequence_indices), so no token attends to another
    example, and the loss over the label tokens is the padded batch's (tested). Without `use_cache=False` a cache is
    made in training forwards too and the examples are silently mixed. The concatenation is transformers'
    DataCollatorWithFlattening, which also sets each example's first label to -100 so that no example's last token
    is trained to predict the next example's first. It also gives the examples' boundaries as transformers'
    variable-length keywords (`cu_seq_lens_q/k`: cumulative lengths [0, t_1, t_1 + t_2, ...], `max_length_q/k`),
    which the model passes down to its attention function: flash-attention's and weitiao's segment attention
    (training.segment_attention) score each example alone; sdpa and eager ignore them and use the mask.

    `multiple` > 1 rounds the row's length up to a multiple of it with a filler example after the last: `pad_id`
    tokens, labels -100, its own positions and boundary, so it attends to nothing else, nothing attends to it, and
    the loss and gradients are unchanged. Fewer distinct row shapes let the CPU allocator and oneDNN reuse their
    buffers: a loop of random 300-1000-token rows grew to 4.05 GiB of RSS, 3.01 GiB with lengths rounded to 64
    (train.padding_free_multiple)."""

    pad_id: int = 0
    multiple: int = 1

    def __post_init__(self):
        from transformers import DataCollatorWithFlattening

        # made once, not for every batch
        self.flatten = DataCollatorWithFlattening(return_tensors="pt", return_flash_attn_kwargs=True)

    def __call__(self, features: list[dict]):
        batch = self.flatten([{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features])
        fill = -batch["input_ids"].shape[1] % max(1, self.multiple)
        return {**(self._with_filler(batch, fill) if fill else batch), "use_cache": False}

    def _with_filler(self, batch: dict, fill: int) -> dict:
        import torch

        ids, labels, positions = batch["input_ids"], batch["labels"], batch["position_ids"]  # each (1, T)
        out = dict(batch)
        out["input_ids"] = torch.cat([ids, ids.new_full((1, fill), self.pad_id)], dim=1)
        out["labels"] = torch.cat([labels, labels.new_full((1, fill), IGNORE_INDEX)], dim=1)
        out["position_ids"] = torch.cat([positions, torch.arange(fill, dtype=positions.dtype)[None]], dim=1)
        for side in ("q", "k"):  # cumulative lengths [0, t_1, ..., T] gain the filler's end, T + fill
            bounds = batch[f"cu_seq_lens_{side}"]
            out[f"cu_seq_lens_{side}"] = torch.cat([bounds, bounds.new_tensor([int(bounds[-1]) + fill])])
            out[f"max_length_{side}"] = max(batch[f"max_length_{side}"], fill)
        return out


@dataclass(frozen=True)
class BatchCost:
    """The relative compute of a training batch, to choose between one padding-free row and padded rows.

    Unit: one token through the transformer blocks' linear layers, forward and backward. On top of that, attention
    costs `pair_packed` or `pair_padded` per query-key pair it scores, and the LM head `head` per position that
    gets logits. A padded batch of B rows of width W scores B x W^2 / 2 pairs (a causal kernel skips the upper
    half). A packed row of T tokens is scored as one T x T matrix under a block-diagonal mask (transformers' sdpa
    and eager attention: nothing skips the masked blocks), T^2 pairs, unless the kernel takes the examples'
    boundaries (`varlen`: flash-attention's variable-length kernels, or weitiao's segment attention,
    training.segment_attention), where only each example's own t^2 / 2 count.
    So packing saves the padding's work and pays for the cross-example pairs: a win for short examples of mixed
    lengths, a heavy loss for long ones. With `labels_only` (label-position logits), a packed row gets logits at
    its label positions and a padded batch at every row of each column where some row has a label."""

    pair_packed: float
    pair_padded: float
    head: float
    labels_only: bool = True
    varlen: bool = False
    multiple: int = 8  # PadCollator's width rounding
    packed_multiple: int = 1  # PaddingFreeCollator's: its filler example is computed too

    def packed(self, features: list[dict]) -> float:
        lengths = [len(f["input_ids"]) for f in features]
        fill = -sum(lengths) % max(1, self.packed_multiple)
        lengths += [fill] if fill else []
        total = sum(lengths)
        if self.varlen:
            attention = self.pair_padded * sum(n * n for n in lengths) / 2
        else:
            attention = self.pair_packed * total * total
        logits = sum(_label_count(f) for f in features) if self.labels_only else total
        return total + attention + self.head * logits

    def padded(self, features: list[dict]) -> float:
        width = -(-max(len(f["input_ids"]) for f in features) // self.multiple) * self.multiple
        rows = len(features)
        if self.labels_only:  # columns (of positions predicting a label) where some row has a label
            columns = {i for f in features for i, x in enumerate(f["labels"][1:]) if x != IGNORE_INDEX}
            logits = rows * len(columns)
        else:
            logits = rows * width
        return rows * width + self.pair_padded * rows * width * width / 2 + self.head * logits


def _label_count(feature: dict) -> int:
    return sum(1 for x in feature["labels"][1:] if x != IGNORE_INDEX)


class CheaperBatchCollator:
    """Each batch as one padding-free row or as padded rows, whichever `cost` says is cheaper; counts both kinds.

    Both give the same loss and gradients (tests), so the choice changes speed and memory only. The counts cover
    every batch made, validation batches included."""

    def __init__(self, pad_id: int, cost: BatchCost):
        self.packed = PaddingFreeCollator(pad_id, cost.packed_multiple)
        self.padded = PadCollator(pad_id)
        self.cost = cost
        self.counts = {"padding_free": 0, "padded": 0}

    def __call__(self, features: list[dict]):
        kind = "padding_free" if self.cost.packed(features) <= self.cost.padded(features) else "padded"
        self.counts[kind] += 1
        return (self.packed if kind == "padding_free" else self.padded)(features)


# ---------------------------------------------------------------- task classify


def label_names(cfg: DataConfig, splits: Splits) -> list[str]:
    """The class names, in the head's output order: `data.labels`, or the sorted names in the training data.

    Every row's label must be one of them; all rows that are not are reported together."""
    names = list(cfg.labels) or sorted({ex.label for ex in splits.train})
    known = set(names)
    unknown = [f"{ex.where}: label {ex.label!r} is not one of the classes ({', '.join(names)})"
               for split in (splits.train, splits.val, splits.test) for ex in split if ex.label not in known]
    if unknown:
        where = "data.labels" if cfg.labels else "the training data's labels"
        raise DataError([f"{u} (classes from {where})" for u in unknown[:MAX_REPORTED]], total=len(unknown))
    if len(names) < 2:
        raise DataError([f"data: task classify needs at least 2 classes, found {names}"])
    return names


def encode_labelled(examples: list[Example], tokenizer, labels: list[str] | None, max_length: int, name: str,
                    report: dict) -> list[dict]:
    """{"input_ids", "labels"} per row: the text tokenized with the model's special tokens ([CLS] ... [SEP] for
    BERT), cut to `max_length`, and the label's index among `labels`, or (`labels` None: task regress) the label
    as a number (`score_labels` checked them)."""
    index = {label: i for i, label in enumerate(labels or [])}
    out, truncated = [], 0
    for ex in examples:
        ids = tokenizer(ex.text, truncation=False)["input_ids"]
        if len(ids) > max_length:
            truncated += 1
            ids = tokenizer(ex.text, truncation=True, max_length=max_length)["input_ids"]
        out.append({"input_ids": ids, "labels": index[ex.label] if labels else float(ex.label)})
    report[f"{name}_truncated"] = truncated
    report[f"{name}_tokens"] = sum(len(e["input_ids"]) for e in out)
    if labels:
        report[f"{name}_label_counts"] = {label: sum(1 for ex in examples if ex.label == label) for label in labels}
    elif out:
        scores = [e["labels"] for e in out]
        report[f"{name}_scores"] = {"min": min(scores), "mean": round(sum(scores) / len(scores), 4),
                                    "max": max(scores)}
    return out


def score_labels(splits: Splits) -> None:
    """task regress: every row's label is a finite number; all rows that are not are reported together."""
    import math

    bad = []
    for split in (splits.train, splits.val, splits.test):
        for ex in split:
            try:
                ok = math.isfinite(float(ex.label))
            except ValueError:
                ok = False
            if not ok:
                bad.append(f"{ex.where}: label {ex.label!r} is not a number (task regress learns a score)")
    if bad:
        raise DataError(bad[:MAX_REPORTED], total=len(bad))


class LabelledCollator:
    """Pads token ids with the tokenizer's pad token (and side), builds the attention mask, stacks the labels:
    class indices, or (`scores`) float targets for a regression head."""

    def __init__(self, tokenizer, scores: bool = False):
        self.tokenizer, self.scores = tokenizer, scores

    def __call__(self, features: list[dict]):
        import torch

        batch = self.tokenizer.pad([{"input_ids": f["input_ids"]} for f in features], return_tensors="pt",
                                   pad_to_multiple_of=8)
        batch["labels"] = torch.tensor([f["labels"] for f in features],
                                       dtype=torch.float32 if self.scores else torch.long)
        return batch


def to_hf_dataset_labelled(rows: list[dict]):
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": [r["input_ids"] for r in rows], "labels": [r["labels"] for r in rows],
                              "length": [len(r["input_ids"]) for r in rows]})
