"""Deterministic demo datasets (count_list: chat rows; support_intent: labelled rows)."""
from __future__ import annotations

import json
from pathlib import Path


def write_split_files(out_dir: str | Path, splits: dict[str, list[dict]]) -> dict[str, Path]:
    """Write each split as OUT_DIR/<name>.jsonl (UTF-8, one JSON object per line); returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, rows in splits.items():
        path = out_dir / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        written[name] = path
    return written
