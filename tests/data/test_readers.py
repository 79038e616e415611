from __future__ import annotations

import json

import pytest

from weitiao.data.readers import read_rows, resolve_paths
from weitiao.errors import DataError


def test_jsonl_json_csv_parquet_and_folders(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"instruction": "a", "output": "b"}, {"instruction": "c", "output": "d"}]
    (tmp_path / "x.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    (tmp_path / "x.json").write_text(json.dumps(rows))
    (tmp_path / "x.csv").write_text("instruction,output\na,b\n\"c\",d\n")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "x.parquet")
    (tmp_path / "notes.txt").write_text("ignored")
    paths = resolve_paths([str(tmp_path)], ".", "data.train")
    assert [p.name for p in paths] == ["x.csv", "x.json", "x.jsonl", "x.parquet"]
    got, bad = read_rows(paths)
    assert bad == []
    assert [r.data for r in got] == rows * 4
    assert got[0].where.endswith("x.csv line 2") and got[2].where.endswith("x.json row 0")
    assert got[5].where.endswith("x.jsonl line 2") and got[7].where.endswith("x.parquet row 1")


def test_every_bad_line_is_collected_with_its_kind(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_bytes(b'{"a": 1}\n{"a": \n[1, 2]\n\xff\xfe\n')
    rows, bad = read_rows([p])
    assert [r.data for r in rows] == [{"a": 1}]
    assert [(b.where, b.kind) for b in bad] == [(f"{p} line 2", "unparsable"), (f"{p} line 3", "wrong-type"),
                                                (f"{p} line 4", "not-utf8")]
    assert str(bad[0]).startswith(f"{p} line 2: not valid JSON")


def test_a_byte_order_mark_is_read_as_windows_tools_write_it(tmp_path):
    """JSONL, JSON and CSV files that start with a UTF-8 byte-order mark read like the same files without one (the
    mark once made the first JSONL line unparsable and joined the first CSV column's name)."""
    rows = [{"instruction": "a", "output": "b"}, {"instruction": "c", "output": "d"}]
    bom = "\ufeff"
    (tmp_path / "x.jsonl").write_text(bom + "\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    (tmp_path / "x.json").write_text(bom + json.dumps(rows), encoding="utf-8")
    (tmp_path / "x.csv").write_text(bom + "instruction,output\na,b\nc,d\n", encoding="utf-8")
    assert (tmp_path / "x.jsonl").read_bytes()[:3] == b"\xef\xbb\xbf"
    for name in ("x.jsonl", "x.json", "x.csv"):
        got, bad = read_rows([tmp_path / name])
        assert bad == [] and [r.data for r in got] == rows, name


def test_missing_paths(tmp_path):
    with pytest.raises(DataError) as info:
        resolve_paths(["nope.jsonl", str(tmp_path)], str(tmp_path), "data.val")
    assert "data.val[0]" in str(info.value) and "does not exist" in str(info.value)
    assert "data.val[1]" in str(info.value) and "holds no" in str(info.value)
