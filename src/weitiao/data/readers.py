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
    folder: Path
    commit: str

    def __str__(self) -> str:
        return f"{self.repo}{'/' + self.config if self.config else ''}@{self.commit}:{self.split}"


def hub_dataset(entry: str, field: str) -> HubDataset | None:
    """The hub dataset an entry names, downloaded; None when it does not look like one."""
    from weitiao.models import hub

    match = HUB_DATASET.match(entry)
    if match is None or entry.endswith(SUFFIXES) or entry.startswith((".", "/", "~")):
        return None
    folder, commit = hub.snapshot(match["repo"], "dataset", match["revision"], field)
    return HubDataset(match["repo"], match["config"], match["split"] or DEFAULT_SPLITS.get(field.split("[")[0],
                                                                                          "train"), folder, commit)


def resolve_paths(entries: list[str], base_dir: str, field: str, documents: bool = False) -> list[Path | HubDataset]:
    """Turn config entries (files or folders, relative to the config's folder; or hub datasets) into a sorted list
    of data files and hub datasets. `documents` (format text): .txt files count too, as one document each; a
    folder's other .txt files (notes, a README) are not data."""
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
                remote = hub_dataset(entry, f"{field}[{i}]")
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


def _read_jsonl(path: Path, bad: list[BadRow]) -> list[Row]:
    rows = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                # utf-8-sig on the first line: a byte-order mark, as Windows tools write one, is not part of the row
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as err:
                bad.append(BadRow(f"{path} line {lineno}", "not-utf8", f"not valid UTF-8 (byte {err.start})"))
                continue
            if not line.strip():
                continue  # blank lines are allowed and skipped
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                bad.append(_json_error(f"{path} line {lineno}", err))
                continue
            _add_object(obj, f"{path} line {lineno}", rows, bad)
    return rows


def _json_error(where: str, err: json.JSONDecodeError) -> BadRow:
    return BadRow(where, "unparsable", f"not valid JSON ({err.msg} at column {err.colno})")


def _add_object(obj, where: str, rows: list[Row], bad: list[BadRow]) -> None:
    """A row must be a JSON object (a mapping of field names to values)."""
    if isinstance(obj, dict):
        rows.append(Row(obj, where))
    else:
        bad.append(BadRow(where, "wrong-type", f"expected a JSON object, got {type(obj).__name__}"))


def _read_json(path: Path, bad: list[BadRow]) -> list[Row]:
    try:
        text = path.read_text(encoding="utf-8-sig")  # a leading byte-order mark is dropped
    except UnicodeDecodeError as err:
        bad.append(BadRow(str(path), "not-utf8", f"not valid UTF-8 (byte {err.start})"))
        return []
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":  # a .json file that is really JSON lines
            return _read_jsonl(path, bad)
        bad.append(_json_error(f"{path} line {err.lineno}", err))
        return []
    if isinstance(obj, dict):
        # {"data": [...]} or {"train": [...]} style wrappers hold one list of rows
        lists = [v for v in obj.values() if isinstance(v, list)]
        if len(lists) != 1:
            bad.append(BadRow(str(path), "wrong-type", "expected a list of row objects"))
            return []
        obj = lists[0]
    if not isinstance(obj, list):
        bad.append(BadRow(str(path), "wrong-type", "expected a list of row objects"))
        return []
    rows: list[Row] = []
    for i, item in enumerate(obj):
        _add_object(item, f"{path} row {i}", rows, bad)
    return rows


def _read_csv(path: Path, bad: list[BadRow]) -> list[Row]:
    rows = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # else a BOM joins the first column's name
            reader = csv.DictReader(fh)
            for record in reader:
                # line_num is the line where this record ended (records may span lines)
                if None in record:
                    where = f"{path} line {reader.line_num}"
                    bad.append(BadRow(where, "unparsable", "more values than header columns"))
                    continue
                if all(v is None or v == "" for v in record.values()):
                    continue
                data = {}
                for k, v in record.items():
                    # JSON-looking cells (lists of turns, history) are decoded; everything else stays text
                    if isinstance(v, str) and v[:1] in "[{":
                        try:
                            v = json.loads(v)
                        except json.JSONDecodeError:
                            pass
                    data[k] = v
                rows.append(Row(data, f"{path} line {reader.line_num}"))
    except UnicodeDecodeError as err:
        bad.append(BadRow(str(path), "not-utf8", f"not valid UTF-8 (byte {err.start})"))
    except csv.Error as err:
        bad.append(BadRow(str(path), "unparsable", f"not valid CSV ({err})"))
    return rows


def _read_parquet(path: Path, bad: list[BadRow]) -> list[Row]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for corrupt files
        bad.append(BadRow(str(path), "unparsable", f"not a readable parquet file ({err})"))
        return []
    return [Row(rec, f"{path} row {i}") for i, rec in enumerate(table.to_pylist())]


def _read_txt(path: Path, bad: list[BadRow]) -> list[Row]:
    """A plain-text file is one document: a row {"text": its content} (format text, task pretrain)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        bad.append(BadRow(str(path), "not-utf8", f"not UTF-8 text ({err.reason} at byte {err.start})"))
        return []
    return [Row({"text": text}, str(path))] if text.strip() else []


READERS = {".txt": _read_txt, ".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv,
           ".parquet": _read_parquet}


def _read_hub(source: HubDataset, bad: list[BadRow]) -> list[Row]:
    import datasets

    try:
        table = datasets.load_dataset(str(source.folder), name=source.config, split=source.split)
    except ValueError as err:  # an unknown split or config: datasets names the ones there are
        raise DataError([f"{source.repo}: {str(err).splitlines()[0]}"]) from None
    return [Row(rec, f"{source} row {i}") for i, rec in enumerate(table)]


def read_rows(paths: list[Path | HubDataset]) -> tuple[list[Row], list[BadRow]]:
    """All readable rows of all files and hub datasets, in order, and every row that could not be read."""
    rows: list[Row] = []
    bad: list[BadRow] = []
    for path in paths:
        if isinstance(path, HubDataset):
            rows.extend(_read_hub(path, bad))
            continue
        suffix = next(s for s in SUFFIXES if path.name.endswith(s))
        rows.extend(READERS[suffix](path, bad))
    return rows, bad
