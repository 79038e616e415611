"""Read rows from json, jsonl, csv and parquet files, or from a hub dataset, keeping where each row came from.

Every row is returned as a `Row(data, where)`, with `where` such as `data/train.jsonl line 7`, so that any later
problem (a missing field, an unknown role) can name the file and line. Unreadable rows are collected as `BadRow`s
over every file, so that all of them can be reported together (or skipped, when the user asks).
"""
from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterator

from weitiao.errors import DataError, WeitiaoError

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".txt")
ROW_SUFFIXES = SUFFIXES[:4]  # files of rows; a .txt file is one document, read for format text only
MAX_REPORTED = 20  # problems listed in one error message; the rest are counted


@dataclass(frozen=True)
class Row:
    data: dict
    where: str  # "path line N" or "path row N"


@dataclass(frozen=True)
class BadRow:
    where: str  # "path line N", "path row N", or just "path" for a whole file
    kind: str  # short class of problem: unparsable, not-utf8, missing-field, unknown-role, over-long, ...
    reason: str  # one sentence for the user

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"

    def as_dict(self) -> dict:
        return {"where": self.where, "kind": self.kind, "reason": self.reason}


# owner/name[/config][@revision][:split], e.g. tatsu-lab/alpaca, org/set/zh@v1.0:validation
HUB_DATASET = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:/(?P<config>[\w.-]+))?(?:@(?P<revision>[\w./-]+))?"
                         r"(?::(?P<split>[\w.-]+))?$")
DEFAULT_SPLITS = {"data.train": "train", "data.val": "validation", "data.test": "test"}


@dataclass(frozen=True)
class HubDataset:
    """A dataset on the hub, downloaded (models/hub.py) and read through `datasets` (its splits and configs)."""
    repo: str
    config: str | None
    split: str
    folder: Path | None  # None: streamed from the hub as it is read (data.streaming, online)
    commit: str

    def __str__(self) -> str:
        return f"{self.repo}{'/' + self.config if self.config else ''}@{self.commit}:{self.split}"


def hub_dataset(entry: str, field: str, streaming: bool = False) -> HubDataset | None:
    """The hub dataset an entry names, downloaded (or with `streaming`, online, only its commit looked up); None
    when it does not look like one."""
    from weitiao.models import hub

    prefix = hub.MODELSCOPE if entry.startswith(hub.MODELSCOPE) else ""
    match = HUB_DATASET.match(entry.removeprefix(prefix))
    if match is None or entry.endswith(SUFFIXES) or entry.startswith((".", "/", "~")):
        return None
    repo = prefix + match["repo"]
    if streaming and prefix:
        raise DataError([f"{field}: {entry!r}: data.streaming reads hub datasets from the Hugging Face hub; a "
                         "ModelScope dataset is downloaded first (set data.streaming false)"])
    if streaming and not hub.offline():
        folder, commit = None, hub.commit(repo, "dataset", match["revision"], field)
    else:
        folder, commit = hub.snapshot(repo, "dataset", match["revision"], field)
    return HubDataset(repo, match["config"], match["split"] or DEFAULT_SPLITS.get(field.split("[")[0],
                                                                                          "train"), folder, commit)


def resolve_paths(entries: list[str], base_dir: str, field: str, documents: bool = False,
                  streaming: bool = False) -> list[Path | HubDataset]:
    """Turn config entries (files or folders, relative to the config's folder; or hub datasets) into a sorted list
    of data files and hub datasets. `documents` (format text): .txt files count too, as one document each; a
    folder's other .txt files (notes, a README) are not data. `streaming`: hub datasets are not downloaded."""
    suffixes = SUFFIXES if documents else ROW_SUFFIXES
    paths: list[Path | HubDataset] = []
    problems: list[str] = []
    for i, entry in enumerate(entries):
        p = Path(entry).expanduser()
        if not p.is_absolute():
            p = Path(base_dir) / p
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.name.endswith(suffixes))
            if not found:
                problems.append(f"{field}[{i}]: folder {p} holds no {'/'.join(suffixes)} files")
            paths.extend(found)
        elif p.is_file():
            if not p.name.endswith(suffixes):
                problems.append(f"{field}[{i}]: {p} is not a {'/'.join(suffixes)} file" +
                                (" (.txt files are documents for format text)" if p.suffix == ".txt" else ""))
            paths.append(p)
        else:
            try:
                remote = hub_dataset(entry, f"{field}[{i}]", streaming)
            except WeitiaoError as err:
                problems.append(f"{err} (and {p} does not exist)")
                continue
            if remote is None:
                problems.append(f"{field}[{i}]: {p} does not exist")
            else:
                paths.append(remote)
    if problems:
        raise DataError(problems)
    return paths


def _read_jsonl(path: Path) -> Iterator[Row | BadRow]:
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                # utf-8-sig on the first line: a byte-order mark, as Windows tools write one, is not part of the row
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as err:
                yield BadRow(f"{path} line {lineno}", "not-utf8", f"not valid UTF-8 (byte {err.start})")
                continue
            if not line.strip():
                continue  # blank lines are allowed and skipped
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                yield _json_error(f"{path} line {lineno}", err)
                continue
            yield _row_of(obj, f"{path} line {lineno}")


def _json_error(where: str, err: json.JSONDecodeError) -> BadRow:
    return BadRow(where, "unparsable", f"not valid JSON ({err.msg} at column {err.colno})")


def _row_of(obj, where: str) -> Row | BadRow:
    """A row must be a JSON object (a mapping of field names to values)."""
    if isinstance(obj, dict):
        return Row(obj, where)
    return BadRow(where, "wrong-type", f"expected a JSON object, got {type(obj).__name__}")


def _read_json(path: Path) -> Iterator[Row | BadRow]:
    """A whole JSON document (a list of rows, or one wrapper object holding it): read at once, so it is not
    streamed; JSON lines are."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a leading byte-order mark is dropped
    except UnicodeDecodeError as err:
        yield BadRow(str(path), "not-utf8", f"not valid UTF-8 (byte {err.start})")
        return
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":  # a .json file that is really JSON lines
            yield from _read_jsonl(path)
        else:
            yield _json_error(f"{path} line {err.lineno}", err)
        return
    if isinstance(obj, dict):
        # {"data": [...]} or {"train": [...]} style wrappers hold one list of rows
        lists = [v for v in obj.values() if isinstance(v, list)]
        obj = lists[0] if len(lists) == 1 else None
    if not isinstance(obj, list):
        yield BadRow(str(path), "wrong-type", "expected a list of row objects")
        return
    for i, item in enumerate(obj):
        yield _row_of(item, f"{path} row {i}")


def _read_csv(path: Path) -> Iterator[Row | BadRow]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # else a BOM joins the first column's name
            reader = csv.DictReader(fh)
            for record in reader:
                # line_num is the line where this record ended (records may span lines)
                if None in record:
                    yield BadRow(f"{path} line {reader.line_num}", "unparsable", "more values than header columns")
                elif not all(v is None or v == "" for v in record.values()):
                    yield Row({k: _cell(v) for k, v in record.items()}, f"{path} line {reader.line_num}")
    except UnicodeDecodeError as err:
        yield BadRow(str(path), "not-utf8", f"not valid UTF-8 (byte {err.start})")
    except csv.Error as err:
        yield BadRow(str(path), "unparsable", f"not valid CSV ({err})")


def _cell(value):
    """A CSV cell: JSON-looking cells (lists of turns, history) are decoded; everything else stays text."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            pass
    return value


def _read_parquet(path: Path) -> Iterator[Row | BadRow]:
    """Read a row group at a time, so that a large file streams."""
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches()
        i = 0
        for batch in batches:
            for rec in batch.to_pylist():
                yield Row(rec, f"{path} row {i}")
                i += 1
    except Exception as err:  # pyarrow raises several types for corrupt files
        yield BadRow(str(path), "unparsable", f"not a readable parquet file ({err})")


def _read_txt(path: Path) -> Iterator[Row | BadRow]:
    """A plain-text file is one document: a row {"text": its content} (format text, task pretrain)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        yield BadRow(str(path), "not-utf8", f"not UTF-8 text ({err.reason} at byte {err.start})")
        return
    if text.strip():
        yield Row({"text": text}, str(path))


READERS = {".txt": _read_txt, ".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv,
           ".parquet": _read_parquet}


def _read_hub(source: HubDataset) -> Iterator[Row]:
    """A hub dataset's rows through `datasets`: from the downloaded snapshot, or (`source.folder` None, with
    data.streaming) straight from the hub, file by file as they are read."""
    import datasets

    try:
        table = datasets.load_dataset(str(source.folder) if source.folder else source.repo, name=source.config,
                                      split=source.split, streaming=source.folder is None,
                                      **({} if source.folder else {"revision": source.commit}))
    except ValueError as err:  # an unknown split or config: datasets names the ones there are
        raise DataError([f"{source.repo}: {str(err).splitlines()[0]}"]) from None
    for i, rec in enumerate(table):
        yield Row(rec, f"{source} row {i}")


def iter_rows(paths: list[Path | HubDataset]) -> Iterator[Row | BadRow]:
    """Every row of every file and hub dataset, in order, read as it is asked for: a readable row as a Row, one
    that is not as a BadRow."""
    for path in paths:
        if isinstance(path, HubDataset):
            yield from _read_hub(path)
        else:
            yield from READERS[next(s for s in SUFFIXES if path.name.endswith(s))](path)


def read_rows(paths: list[Path | HubDataset]) -> tuple[list[Row], list[BadRow]]:
    """All readable rows of all files and hub datasets, in order, and every row that could not be read."""
    rows: list[Row] = []
    bad: list[BadRow] = []
    for row in iter_rows(paths):
        (rows if isinstance(row, Row) else bad).append(row)
    return rows, bad
