"""data.streaming: the training split read, checked and tokenized as training consumes it, for data larger than
memory.

The rows come from `readers.iter_rows` (local files row by row, a hub dataset through `datasets`' streaming), go
through the same conversion (`formats.to_example`) and tokenization (`encode_split`, or `encode_documents` for task
pretrain) as rows read at once, and reach the Trainer as a `datasets.IterableDataset`, shuffled within a window
(`data.shuffle_buffer`). What differs is when a problem is found: a bad row stops training when it is reached,
naming its file and line, unless `data.skip_bad_rows`; and what is counted is counted as training goes
(`StreamCounts`), since nothing knows the stream's length beforehand.
"""
from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Iterator

from weitiao.config import DataConfig
from weitiao.data.encode import IGNORE_INDEX
from weitiao.data.formats import Example, RowProblem, is_empty_row, to_example
from weitiao.data.readers import BadRow, HubDataset, Row, iter_rows
from weitiao.errors import DataError


@dataclass
class StreamCounts:
    """What the stream did. rows, tokens, trained_tokens: handed to training (after the shuffle window); the rest
    as rows were read."""
    rows: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    rows_read: int = 0
    empty_rows_dropped: int = 0
    bad_rows_skipped: int = 0
    truncated: int = 0
    overlong_dropped: int = 0
    passes: int = 0  # times the Trainer started reading the stream (each pass after the first repeats the data)

    def as_report(self) -> dict:
        return {f"train_{name}": value for name, value in asdict(self).items()}


@dataclass
class Handed:
    """Rows handed to the data loader, per pass, and the (tokens, trained tokens) of the last batch's worth: the
    loader reads one batch ahead of training (accelerate's DataLoaderShard), so at the end the rows read ahead are
    taken back off the counts (`TrainStream.settle`)."""
    per_pass: list[int] = field(default_factory=list)
    recent: deque = field(default_factory=deque)


@dataclass
class TrainStream:
    """The training split of `paths` as a stream (`dataset`), with `first` to check that it has a usable row
    before any model is loaded. `skipped` receives the rows skipped under `data.skip_bad_rows`."""
    paths: list[Path | HubDataset]
    cfg: DataConfig
    skipped: list[BadRow] | None
    counts: StreamCounts = field(default_factory=StreamCounts)
    handed: Handed = field(default_factory=Handed)

    def examples(self) -> Iterator[Example]:
        for row in iter_rows(self.paths):
            self.counts.rows_read += 1
            if isinstance(row, Row) and is_empty_row(row.data):
                self.counts.empty_rows_dropped += 1
                continue
            try:
                if isinstance(row, BadRow):
                    raise RowProblem(row.reason, row.kind)
                yield to_example(row, self.cfg.format, self.cfg.columns, self.cfg.system)
            except RowProblem as err:
                self.bad(BadRow(row.where, err.kind, str(err) if isinstance(row, BadRow)
                                else f"{err} (format {self.cfg.format!r})"))

    def bad(self, row: BadRow) -> None:
        """A bad row in the stream: the run stops on it, or it is skipped and recorded (data.skip_bad_rows)."""
        if self.skipped is None:
            raise DataError([f"{row} (data.streaming: found while training)"])
        self.counts.bad_rows_skipped += 1
        self.skipped.append(row)

    def first(self) -> Example:
        """The first usable training row; an error when the stream has none. Training reads it again: the counts
        start afresh."""
        try:
            for example in self.examples():
                return example
        finally:
            self.counts = StreamCounts()
        raise DataError(["data.train: no usable training rows in " + ", ".join(str(p) for p in self.paths)])

    def encoded(self, template, tokenizer, documents: bool) -> Iterator[dict]:
        """Token ids and labels, one example at a time, through the same functions as data read at once: a document
        (task pretrain) becomes its max_length pieces; an over-long row is truncated or dropped as data.overlong
        says."""
        from weitiao.data.dataset import encode_documents, encode_split

        self.counts.passes += 1
        self.handed.per_pass.append(0)
        for example in self.examples():
            report: dict = {}
            if documents:
                pieces, _ = encode_documents([example], template, tokenizer, self.cfg, "train", report)
            else:
                skipped = [] if self.skipped is not None else None
                pieces = encode_split([example], template, tokenizer, self.cfg, "train", report, skipped=skipped)
                for problem in skipped or []:
                    self.bad(problem)
            self.counts.truncated += report["train_truncated"]
            self.counts.overlong_dropped += report["train_overlong_dropped"]
            for piece in pieces:
                yield {"input_ids": piece.input_ids, "labels": piece.labels}

    def count(self, example: dict) -> dict:
        """Called on each example as the data loader takes it (after the shuffle window)."""
        tokens, trained = len(example["input_ids"]), sum(1 for x in example["labels"] if x != IGNORE_INDEX)
        self.counts.rows += 1
        self.counts.tokens += tokens
        self.counts.trained_tokens += trained
        self.handed.per_pass[-1] += 1
        self.handed.recent.append((tokens, trained))
        return example

    def settle(self, batches: int, batch_size: int) -> None:
        """Make the counts those of the `batches` batches training took: every batch of a pass is full but its
        last, and what the loader read beyond them (at most one batch) comes off. After a resume the counts
        also hold the rows read again to skip the batches trained before it."""
        taken, left = 0, batches
        for rows in self.handed.per_pass:
            batches_in_pass = min(left, -(-rows // batch_size))
            taken, left = taken + min(rows, batches_in_pass * batch_size), left - batches_in_pass
        for _ in range(max(0, min(self.counts.rows - taken, len(self.handed.recent)))):
            tokens, trained = self.handed.recent.pop()
            self.counts.rows, self.counts.tokens = self.counts.rows - 1, self.counts.tokens - tokens
            self.counts.trained_tokens -= trained

    def dataset(self, template, tokenizer, documents: bool, seed: int, batch_size: int):
        """The Trainer's training set: a `datasets.IterableDataset` over `encoded`, shuffled within
        data.shuffle_buffer examples (a new order each pass: the Trainer sets the epoch), counted as it is taken."""
        from datasets import IterableDataset

        self.handed.recent = deque(maxlen=batch_size * 64)  # enough for a batch of each of 64 processes
        stream = IterableDataset.from_generator(self.encoded, gen_kwargs={"template": template,
                                                                          "tokenizer": tokenizer,
                                                                          "documents": documents})
        if self.cfg.shuffle_buffer > 1:
            stream = stream.shuffle(seed=seed, buffer_size=self.cfg.shuffle_buffer)
        return stream.map(self.count)
