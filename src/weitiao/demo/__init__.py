"""Deterministic demo datasets (count_list: chat rows; support_intent: labelled rows)."""
from __future__ import annotations

import json
import random
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


def disjoint_splits(categories: list[str], phrasings: int, row, seed: int, sizes: dict[str, int]
                    ) -> dict[str, list[dict]]:
    """Splits whose (category, N, phrasing) combinations are disjoint, N from 1 to 10, each row made by
    `row(category, n, phrasing, rng)`; the same seed gives the same rows (this demo and count_list_zh)."""
    rng = random.Random(seed)
    combos = [(c, n, p) for c in categories for n in range(1, 11) for p in range(phrasings)]
    rng.shuffle(combos)
    if sum(sizes.values()) > len(combos):
        raise ValueError(f"at most {len(combos)} rows with disjoint (category, N, phrasing)")
    out, start = {}, 0
    for name, size in sizes.items():
        out[name] = [row(c, n, p, rng) for c, n, p in combos[start: start + size]]
        start += size
    return out
